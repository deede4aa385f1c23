"""Background tasks that nobody awaits (closing a drained link, an old source).

The event loop keeps only weak references to tasks: a task nobody holds can be garbage
collected before it finishes. :func:`spawn` holds it until it is done and logs a failure,
so a close that goes wrong is seen instead of vanishing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("captiond.tasks")

_running: set[asyncio.Task[Any]] = set()


def spawn(coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
    """Run ``coro`` in the background on the running loop; it is kept alive until done."""
    task = asyncio.get_running_loop().create_task(coro, name=name)
    _running.add(task)
    task.add_done_callback(_finished)
    return task


def _finished(task: asyncio.Task[Any]) -> None:
    _running.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("task.failed name=%s error=%r", task.get_name(), str(task.exception()))


def running() -> int:
    """Background tasks not finished yet (for tests and leak checks)."""
    return len(_running)

"""The outputs as a daemon service: started with the session, changed by a config reload.

:func:`outputs_service` is one of :func:`captiond.daemon.default_services`. The daemon
keeps its :class:`OutputSet` and asks it for status
(``captiond status``, ``/api/status``, the overlay's index page) and hands the new
``[[outputs]]`` list on a reload (:meth:`OutputSet.apply`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from captiond.errors import ConfigError
from captiond.feed import Feed
from captiond.logs import register_secret
from captiond.outputs.drivers import CLOSE_FLUSH_S, Output
from captiond.outputs.spec import OutputSpec, resolve
from captiond.services import ServiceContext

log = logging.getLogger("captiond.outputs")

#: How long an output's task may take to end after close() (its flush is bounded below this).
CLOSE_TIMEOUT_S = CLOSE_FLUSH_S + 1.0


def build_output(spec: OutputSpec, feed: Feed) -> Output:
    """The output for ``spec`` with its secrets read and registered with the log redactor."""
    secrets = resolve(spec)
    register_secret(secrets.url if spec.kind != "obs" else None)
    register_secret(secrets.password or None)
    return Output(spec, secrets, feed)


class OutputSet:
    """The running outputs, by name."""

    def __init__(self, feed: Feed) -> None:
        self.feed = feed
        self.outputs: dict[str, Output] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, specs: Sequence[OutputSpec]) -> None:
        """Build and start every output; ConfigError (nothing started) if one cannot be built."""
        built = [build_output(spec, self.feed) for spec in specs]
        for output in built:
            self._launch(output)

    def _launch(self, output: Output) -> None:
        output.subscribe()
        self.outputs[output.spec.name] = output
        self._tasks[output.spec.name] = asyncio.create_task(
            output.run(), name=f"output-{output.spec.name}")

    async def _stop(self, name: str) -> None:
        output = self.outputs.pop(name)
        task = self._tasks.pop(name)
        output.close()
        try:
            await asyncio.wait_for(task, CLOSE_TIMEOUT_S)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        except Exception:  # noqa: BLE001 - a failed output must not stop the others closing
            log.exception("output.close_error name=%s", name)

    async def apply(self, specs: Sequence[OutputSpec]) -> bool:
        """Run exactly ``specs``: start added outputs, stop removed ones, restart changed
        ones. False (nothing changed) when a new one cannot be built (its secret is missing)."""
        wanted = {s.name: s for s in specs}
        added = [s for n, s in wanted.items()
                 if n not in self.outputs or self.outputs[n].spec != s]
        try:
            built = [build_output(spec, self.feed) for spec in added]
        except ConfigError as exc:
            log.error("config.outputs_failed error=%r keeping=old", str(exc))
            return False
        for name in [n for n in self.outputs if n not in wanted or n in {s.name for s in added}]:
            await self._stop(name)
        for output in built:
            self._launch(output)
        log.info("outputs.changed running=%s", ",".join(sorted(self.outputs)) or "none")
        return True

    async def close(self) -> None:
        await asyncio.gather(*(self._stop(n) for n in list(self.outputs)))

    def status(self) -> list[dict[str, Any]]:
        return [o.status() for o in self.outputs.values()]

    def summary(self) -> str:
        """One line for pages: ``obs ok, youtube failing (HTTP 503)``."""
        parts = []
        for o in self.outputs.values():
            part = f"{o.spec.name} {o.state}"
            if o.state in ("failing", "waiting") and o.last_error:
                part += f" ({o.last_error})"
            parts.append(part)
        return ", ".join(parts)


class OutputsService:
    """The outputs as a daemon service (``start``/``close``); the daemon keeps it to ask for
    status and to hand it the new ``[[outputs]]`` list on a reload."""

    def __init__(self, specs: Sequence[OutputSpec], feed: Feed) -> None:
        self.specs = tuple(specs)
        self.set = OutputSet(feed)

    async def start(self) -> None:
        self.set.start(self.specs)

    async def close(self) -> None:
        await self.set.close()


def outputs_service(ctx: ServiceContext) -> OutputsService | None:
    """A daemon service factory: runs ``ctx.cfg.outputs``. Always returned for a live daemon
    (a reload may add outputs to a config that had none)."""
    specs = ctx.cfg.outputs
    if not specs and not ctx.realtime:
        return None
    return OutputsService(specs, ctx.feed)

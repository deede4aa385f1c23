"""The daemon's single database writer: a thread, a bounded queue, futures back to the loop.

The event loop never waits on the database: :meth:`StoreWriter.submit` never blocks, lines are
coalesced by key, a final (or failed) line is committed at once and partial text at most every
:data:`PARTIAL_FLUSH_S`. A SQLite file that vanishes under the running daemon is put back by
:class:`~captiond.transcript.recovery.FileRecovery`, which the writer runs between writes.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future
from typing import Any

from sqlalchemy.exc import OperationalError

from captiond.events import Line, LineStatus, LineUpdate
from captiond.transcript.recovery import FileRecovery
from captiond.transcript.store import Store

log = logging.getLogger("captiond.store")

#: Partial text is written at most this often (finals go at once).
PARTIAL_FLUSH_S = 0.5
#: Pending writes the writer holds at most; past it, partial text is dropped (never finals).
WRITER_MAX_PENDING = 50_000
#: Retries of a transaction that failed for a transient reason (locked database).
WRITE_RETRIES = 8
WRITE_RETRY_BASE_S = 0.1


class StoreWriter(FileRecovery):
    """The daemon's single writer: a thread, a bounded queue, futures back to the caller.

    ``submit`` never blocks. Lines are coalesced by key; a final (or failed) line makes the
    writer commit at once, partial text at most every :data:`PARTIAL_FLUSH_S`. A transient
    failure (locked database) is retried with backoff and logged; lines stay pending and are
    never dropped for it.
    """

    def __init__(self, store: Store, session_id: int) -> None:
        self.store = store
        self.session_id = session_id
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str, str], Line] = {}
        #: Every line of the session as last written: what is written back if the database
        #: file vanishes and cannot be copied from the still-open file.
        self._written: dict[tuple[str, str, str], Line] = {}
        #: SQLite only: the file's identity and a connection that keeps the file open, so a
        #: deleted database is noticed and can be copied back (see :meth:`_check_file`).
        self._path = store.sqlite_path()
        self._identity: tuple[int, int] | None = None
        self._keeper: sqlite3.Connection | None = None
        self._session_row: dict[str, Any] | None = None
        self.restores = 0
        if self._path is not None:
            self._watch_file()
        self._wake = threading.Event()
        self._stop = False
        self._flush_waiters: list[Future[None]] = []
        self._other: queue.SimpleQueue[tuple[Any, Future[Any]]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="captiond-store", daemon=True)
        self.written = 0
        self.final_written = 0
        self.errors = 0
        self.last_error: str | None = None
        self._thread.start()

    def submit(self, updates: Iterable[LineUpdate]) -> None:
        urgent = False
        with self._lock:
            for u in updates:
                line = u.line
                key = (line.track, line.channel, line.item_id)
                self._pending[key] = line
                if line.status is not LineStatus.PARTIAL:
                    urgent = True
            if len(self._pending) > WRITER_MAX_PENDING:
                self._drop_partials()
        if urgent:
            self._wake.set()

    def call(self, fn: Any) -> Future[Any]:
        """Run ``fn(store)`` on the writer thread, after the lines submitted before it."""
        fut: Future[Any] = Future()
        self._other.put((fn, fut))
        self._wake.set()
        return fut

    def flush(self) -> Future[None]:
        fut: Future[None] = Future()
        with self._lock:
            self._flush_waiters.append(fut)
        self._wake.set()
        return fut

    def close(self, timeout: float = 10.0) -> None:
        """Write everything pending and stop the thread (idempotent)."""
        if self._stop and not self._thread.is_alive():
            return
        self._stop = True
        self._wake.set()
        self._thread.join(timeout)

    def _drop_partials(self) -> None:
        for key in [k for k, v in self._pending.items() if v.status is LineStatus.PARTIAL]:
            del self._pending[key]
        log.warning("store.backlog dropped=partials pending=%d", len(self._pending))

    def _run(self) -> None:
        while True:
            self._wake.wait(PARTIAL_FLUSH_S)
            self._wake.clear()
            self._check_file()
            self._write_pending()
            while True:
                try:
                    fn, fut = self._other.get_nowait()
                except queue.Empty:
                    break
                if fut.set_running_or_notify_cancel():
                    try:
                        fut.set_result(self._retry(lambda fn=fn: fn(self.store)))
                    except BaseException as exc:  # noqa: BLE001 - handed to the caller
                        fut.set_exception(exc)
            with self._lock:
                waiters, self._flush_waiters = self._flush_waiters, []
                empty = not self._pending
            for w in waiters:
                if not w.done():
                    w.set_result(None)
            if self._stop and empty and self._other.empty():
                if self._keeper is not None:
                    self._keeper.close()
                    self._keeper = None
                return

    def _write_pending(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, {}
        if not batch:
            return
        lines = list(batch.values())
        try:
            self._retry(lambda: self.store.write_lines(self.session_id, lines))
        except Exception as exc:  # noqa: BLE001 - keep the lines, report, try again later
            self.errors += 1
            self.last_error = self.store.describe_error(exc)
            log.error("store.write_failed error=%r lines=%d", self.last_error, len(lines))
            with self._lock:
                for line in lines:
                    self._pending.setdefault((line.track, line.channel, line.item_id), line)
            if self._stop:
                return
            time.sleep(WRITE_RETRY_BASE_S * 10)
            return
        self.written += len(lines)
        self.final_written += sum(1 for line in lines if line.status is LineStatus.FINAL)
        if self._path is not None:
            for line in lines:
                self._written[(line.track, line.channel, line.item_id)] = line

    def _retry(self, fn: Any) -> Any:
        delay = WRITE_RETRY_BASE_S
        for attempt in range(WRITE_RETRIES):
            try:
                return fn()
            except OperationalError as exc:
                if "locked" not in str(exc) or attempt == WRITE_RETRIES - 1:
                    raise
                log.warning("store.retry reason=locked attempt=%d", attempt + 1)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        raise AssertionError("unreachable")

"""Recovery of a SQLite database file that vanishes under the running daemon.

``rm captiond.db*`` or a restore by rename while captiond runs would lose the session: the
writer's connections go on writing into a deleted file. :class:`FileRecovery` (a part of
:class:`~captiond.transcript.writer.StoreWriter`) keeps a connection open on the file and
remembers its identity; between writes it checks the path, and when the file was deleted or
replaced it copies the whole database back from the still-open file (every session survives)
or, failing that, writes a new one with the running session and every line written so far.
A foreign file found at the path is moved aside, never overwritten.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from captiond.errors import StoreError
from captiond.events import Line
from captiond.transcript.models import SessionRow
from captiond.transcript.store import (
    PRIVATE_DIR_MODE,
    SQLITE_BUSY_TIMEOUT_MS,
    Store,
    create_private_file,
)

log = logging.getLogger("captiond.store")


class FileRecovery:
    """The writer's watch over its SQLite file (the attributes are the writer's)."""

    store: Store
    session_id: int
    errors: int
    last_error: str | None
    restores: int
    _path: Path | None
    _identity: tuple[int, int] | None
    _keeper: sqlite3.Connection | None
    _session_row: dict[str, Any] | None
    _written: dict[tuple[str, str, str], Line]

    def _watch_file(self) -> None:
        """Remember the file's identity; keep a connection open on it (a deleted file stays
        readable through it); remember the session row."""
        assert self._path is not None
        try:
            st = os.stat(self._path)
            keeper = sqlite3.connect(str(self._path), check_same_thread=False)
            keeper.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            # A first read opens the -wal file too, so it stays readable after an unlink.
            keeper.execute("SELECT count(*) FROM sessions").fetchall()
            cur = keeper.execute("SELECT * FROM sessions WHERE id = ?", (self.session_id,))
            names = [d[0] for d in cur.description]
            row = cur.fetchone()
        except (OSError, sqlite3.Error) as exc:
            log.warning("store.watch_unavailable path=%s error=%r", self._path, str(exc))
            return
        self._identity = (st.st_dev, st.st_ino)
        self._keeper = keeper
        self._session_row = dict(zip(names, row, strict=True)) if row is not None else None

    def _check_file(self) -> None:
        """Notice that the database file was deleted or replaced (``rm captiond.db*``, a
        restore by rename) and put the database back where it was, so no line is lost."""
        if self._path is None or self._identity is None:
            return
        try:
            st = os.stat(self._path)
            if (st.st_dev, st.st_ino) == self._identity:
                return
            how = "replaced"
        except FileNotFoundError:
            how = "deleted"
        except OSError:
            return  # cannot tell now (a directory permission): checked again next time
        self.errors += 1
        self.last_error = (f"database {self._path} was {how} while captiond ran; it was "
                           "recreated with the running session")
        log.error("store.database_vanished path=%s how=%s (recreating it and writing the "
                  "running session back)", self._path, how)
        try:
            if how == "replaced":
                # Someone else's file: kept, beside ours.
                aside = self._path.with_name(f"{self._path.name}.replaced-{int(time.time())}")
                os.replace(self._path, aside)
                log.warning("store.foreign_file_moved path=%s to=%s", self._path, aside)
            # A -wal or -shm still at the path is the running database's (its connections
            # hold them; they read on through their open files): a new file must not meet it.
            for suffix in ("-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._path.with_name(self._path.name + suffix))
            restored = self._copy_back()
        except Exception as exc:  # noqa: BLE001 - fall back to what the writer holds
            log.error("store.copy_back_failed path=%s error=%r", self._path, str(exc))
            restored = self._write_back()
        self.restores += 1
        log.warning("store.database_restored path=%s from=%s session=%d lines=%d",
                    self._path, restored, self.session_id, len(self._written))
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.close()
        self._watch_file()

    def _copy_back(self) -> str:
        """Copy the whole database, through the connection that still has the deleted file
        open, into a new file at the path. Every session survives, not only the running one."""
        if self._keeper is None:
            raise StoreError("no open copy of the database")
        assert self._path is not None
        self._path.parent.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        create_private_file(self._path)
        target = sqlite3.connect(str(self._path))
        try:
            self._keeper.backup(target)
        finally:
            target.close()
        # Pooled connections still point at the deleted file: open new ones.
        self.store.engine.dispose()
        return "open_copy"

    def _write_back(self) -> str:
        """A new database with the running session and every line written so far."""
        assert self._path is not None
        self.store.engine.dispose()
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path.with_name(self._path.name + suffix))
        self._path.parent.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        create_private_file(self._path)
        self.store.upgrade()
        if self._session_row is not None:
            row = dict(self._session_row)
            for key in ("started_at", "ended_at"):
                if isinstance(row.get(key), str):
                    row[key] = dt.datetime.fromisoformat(row[key])
            if isinstance(row.get("meta"), str):
                row["meta"] = json.loads(row["meta"])
            with self.store.engine.begin() as conn:
                conn.execute(insert(SessionRow).values(**row))
        self.store.write_lines(self.session_id, list(self._written.values()))
        return "memory"

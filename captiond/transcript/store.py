"""The transcript store: SQLite by default, PostgreSQL by URL, schema by Alembic.

:class:`Store` is the synchronous API the CLI uses. :class:`StoreWriter` is what the daemon
uses: one writer thread fed by a bounded queue (the event loop never waits on the database),
coalescing partial text and committing finals at once, so a final line is durable well within
a second of being shown; it lives in :mod:`captiond.transcript.writer`, and what it does when
the SQLite file vanishes under it in :mod:`captiond.transcript.recovery`.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, delete, event, func, insert, select, update
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DatabaseError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session as OrmSession

from captiond.errors import InvalidSessionRef, SessionNotFound, StoreError
from captiond.events import Line
from captiond.resources import migrations_dir
from captiond.transcript.models import (
    DroppedRow,
    GapRow,
    KnownSpeakerRow,
    MinutesRow,
    SegmentRow,
    SessionRow,
    SpeakerTurnRow,
    utcnow,
)

log = logging.getLogger("captiond.store")

#: How long SQLite waits for a lock held by another process before reporting it.
SQLITE_BUSY_TIMEOUT_MS = 5_000
#: Characters of a dropped utterance's text kept in the database.
MAX_DROPPED_TEXT = 2_000
#: Modes of what the store creates: transcripts are private to the user.
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
#: Largest session id: the id column is a signed 64-bit integer in SQLite and PostgreSQL.
SESSION_ID_MAX = 2**63 - 1


#: Database back ends captiond's schema and queries are written for (SQLAlchemy names).
SUPPORTED_DATABASES = ("sqlite", "postgresql")
#: The PostgreSQL driver the ``postgresql`` extra installs.
POSTGRES_DRIVER = "psycopg"


def _missing_driver(url: str, driver: str, exc: ImportError) -> str:
    """The error for a database URL whose Python driver is not installed."""
    if driver == POSTGRES_DRIVER:
        return (f"cannot use database {redact_url(url)}: the PostgreSQL driver psycopg is not "
                "installed (pip install 'captiond[postgresql]')")
    return (f"cannot use database {redact_url(url)}: its driver {exc.name or driver} is not "
            "installed (use postgresql+psycopg://USER@HOST/DB and "
            "pip install 'captiond[postgresql]')")


def default_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'captiond.db'}"


def redact_url(url: str) -> str:
    """The URL with any password hidden, for logs and messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a URL we cannot parse is shown as nothing
        return "<unparsable database url>"


def _on_sqlite_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode survives a process crash (kill -9); only power loss may undo the
    # last transactions.
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def create_private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists. SQLite gives its -wal and -shm
    files the mode of the database file, so the whole database stays private (an empty file
    is a new database to SQLite)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:
        return
    except OSError:
        return  # SQLite reports what is wrong with the path when it opens it, in its words
    os.close(fd)


def alembic_config(connection: Any = None) -> Any:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(migrations_dir()))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


class Store:
    """Synchronous access to the transcript database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = self._create_engine(url)

    @classmethod
    def open(cls, url: str, *, migrate: bool = True) -> Store:
        store = cls(url)
        if migrate:
            store.upgrade()
        return store

    # -- connection ----------------------------------------------------------------------

    @staticmethod
    def _create_engine(url: str) -> Engine:
        try:
            parsed = make_url(url)
        except Exception as exc:
            raise StoreError(
                f"database.url is not a database URL: {redact_url(url)!s} "
                "(use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB)"
            ) from exc
        backend = parsed.get_backend_name()
        if backend not in SUPPORTED_DATABASES:
            raise StoreError(
                f"database {redact_url(url)}: {backend} is not supported (captiond stores in "
                "SQLite, sqlite:///PATH, or PostgreSQL, postgresql+psycopg://USER@HOST/DB)"
            )
        if backend == "sqlite":
            path = parsed.database
            if path and path != ":memory:":
                directory = Path(path).expanduser().resolve().parent
                try:
                    # Transcripts are private: a directory we create is the user's alone.
                    directory.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreError(
                        f"cannot create the data directory {directory}: {exc.strerror} "
                        "(set database.url or CAPTIOND_DATABASE_URL to a writable place)"
                    ) from exc
                if not os.access(directory, os.W_OK):
                    raise StoreError(
                        f"the data directory {directory} is not writable "
                        "(fix its permissions or set database.url to a writable place)"
                    )
                create_private_file(Path(path).expanduser())
            engine = create_engine(url, connect_args={"check_same_thread": False})
            event.listen(engine, "connect", _on_sqlite_connect)
            return engine
        try:
            return create_engine(url, pool_pre_ping=True)
        except ImportError as exc:
            raise StoreError(_missing_driver(url, parsed.get_driver_name(), exc)) from exc
        except Exception as exc:  # an unknown driver and the like
            raise StoreError(f"cannot use database {redact_url(url)}: {exc}") from exc

    def close(self) -> None:
        self.engine.dispose()

    def sqlite_path(self) -> Path | None:
        """The database file, for a SQLite database on disk; else None."""
        parsed = make_url(self.url)
        if parsed.get_backend_name() != "sqlite" or not parsed.database:
            return None
        if parsed.database == ":memory:" or parsed.database.startswith("file:"):
            return None
        return Path(parsed.database).expanduser().resolve()

    def describe_error(self, exc: BaseException) -> str:
        text = str(getattr(exc, "orig", exc) or exc)
        where = redact_url(self.url)
        if "file is not a database" in text or "malformed" in text:
            return (
                f"database {where} is damaged or not a SQLite database ({text}); "
                "move it aside and captiond will start a new one"
            )
        if "locked" in text:
            return (
                f"database {where} is locked by another program ({text}); "
                "close it or point database.url elsewhere"
            )
        if "unable to open" in text or "readonly" in text:
            return f"cannot write database {where} ({text}); check the path and its permissions"
        return f"database {where}: {text}"

    # -- schema --------------------------------------------------------------------------

    def upgrade(self, revision: str = "head") -> None:
        from alembic import command

        try:
            with self.engine.begin() as conn:
                command.upgrade(alembic_config(conn), revision)
        except (DatabaseError, OperationalError) as exc:
            raise StoreError(self.describe_error(exc)) from exc

    def downgrade(self, revision: str) -> None:
        from alembic import command

        with self.engine.begin() as conn:
            command.downgrade(alembic_config(conn), revision)

    # -- sessions ------------------------------------------------------------------------

    def begin_session(
        self,
        *,
        source: str,
        engine: str,
        language: str | None = None,
        title: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> int:
        row = SessionRow(
            title=title,
            started_at=utcnow(),
            status="running",
            source=source,
            engine=engine,
            language=language,
            host=socket.gethostname(),
            pid=os.getpid(),
            audio_seconds=0.0,
            cost_usd=0.0,
            meta=meta,
        )
        with OrmSession(self.engine) as s, s.begin():
            s.add(row)
            s.flush()
            return row.id

    def end_session(
        self,
        session_id: int,
        *,
        status: str = "completed",
        audio_seconds: float | None = None,
        cost_usd: float | None = None,
        engine: str | None = None,
    ) -> None:
        values: dict[str, Any] = {"status": status, "ended_at": utcnow()}
        if audio_seconds is not None:
            values["audio_seconds"] = audio_seconds
        if cost_usd is not None:
            values["cost_usd"] = cost_usd
        if engine is not None:
            values["engine"] = engine
        with self.engine.begin() as conn:
            conn.execute(update(SessionRow).where(SessionRow.id == session_id).values(**values))

    def update_session(self, session_id: int, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(SessionRow).where(SessionRow.id == session_id).values(**values))

    def mark_interrupted(self) -> list[int]:
        """Sessions left ``running`` by a daemon of this host that is gone become ``interrupted``."""
        host = socket.gethostname()
        stale: list[int] = []
        with OrmSession(self.engine) as s:
            rows = s.scalars(
                select(SessionRow).where(SessionRow.status == "running", SessionRow.host == host)
            ).all()
            for row in rows:
                if row.pid is not None and (row.pid == os.getpid() or _pid_alive(row.pid)):
                    continue
                stale.append(row.id)
        if stale:
            with self.engine.begin() as conn:
                for sid in stale:
                    last = conn.execute(
                        select(func.max(SegmentRow.updated_at)).where(SegmentRow.session_id == sid)
                    ).scalar()
                    conn.execute(
                        update(SessionRow)
                        .where(SessionRow.id == sid)
                        .values(status="interrupted", ended_at=last or utcnow())
                    )
        return stale

    def list_sessions(self, limit: int = 50) -> list[tuple[SessionRow, int]]:
        """Newest first, with the number of final lines in each."""
        count = (
            select(func.count(SegmentRow.id))
            .where(
                SegmentRow.session_id == SessionRow.id,
                SegmentRow.status == "final",
                SegmentRow.track == "original",
            )
            .scalar_subquery()
        )
        with OrmSession(self.engine) as s:
            rows = s.execute(
                select(SessionRow, count).order_by(SessionRow.id.desc()).limit(limit)
            ).all()
            s.expunge_all()
            return [(r[0], int(r[1] or 0)) for r in rows]

    def resolve_session(self, ref: str | int) -> SessionRow:
        """A session by id, or ``last`` for the newest."""
        with OrmSession(self.engine) as s:
            if str(ref).strip().lower() in ("last", "latest"):
                row = s.scalars(select(SessionRow).order_by(SessionRow.id.desc()).limit(1)).first()
                if row is None:
                    raise SessionNotFound("there are no sessions yet (run `captiond run` first)")
            else:
                try:
                    sid = int(str(ref))
                except ValueError:
                    raise SessionNotFound(
                        f"'{ref}' is not a session (use a number from `captiond sessions` or 'last')"
                    ) from None
                if not 1 <= sid <= SESSION_ID_MAX:
                    # Beyond what the id column holds: the driver would overflow, not miss.
                    raise InvalidSessionRef(
                        f"session id {sid} is out of range (ids are numbers from 1 to "
                        f"{SESSION_ID_MAX}; see `captiond sessions`)"
                    )
                row = s.get(SessionRow, sid)
                if row is None:
                    raise SessionNotFound(
                        f"no session {sid} (see `captiond sessions` for the list)"
                    )
            s.expunge(row)
            return row

    def lines(
        self,
        session_id: int,
        *,
        track: str | None = "original",
        statuses: Sequence[str] = ("final",),
        since_id: int | None = None,
    ) -> list[SegmentRow]:
        """Lines of a session in time order (channels interleaved), then chain order."""
        q = select(SegmentRow).where(SegmentRow.session_id == session_id)
        if track is not None:
            q = q.where(SegmentRow.track == track)
        if statuses:
            q = q.where(SegmentRow.status.in_(list(statuses)))
        if since_id is not None:
            q = q.where(SegmentRow.id > since_id)
        q = q.order_by(SegmentRow.audio_start_ms, SegmentRow.channel, SegmentRow.seq)
        with OrmSession(self.engine) as s:
            rows = list(s.scalars(q).all())
            s.expunge_all()
            return rows

    def gaps(self, session_id: int) -> list[GapRow]:
        with OrmSession(self.engine) as s:
            rows = list(
                s.scalars(
                    select(GapRow).where(GapRow.session_id == session_id).order_by(GapRow.start_ms)
                ).all()
            )
            s.expunge_all()
            return rows

    def final_line_count(self, session_id: int, track: str = "original") -> int:
        """How many final lines a session has on a track."""
        with OrmSession(self.engine) as s:
            count = s.scalar(
                select(func.count(SegmentRow.id)).where(
                    SegmentRow.session_id == session_id,
                    SegmentRow.status == "final",
                    SegmentRow.track == track,
                )
            )
        return int(count or 0)

    def final_lines_after(
        self, session_id: int, track: str, since_id: int, limit: int
    ) -> tuple[list[SegmentRow], int | None]:
        """Final lines with a row id above ``since_id``, in write (id) order, at most ``limit``;
        and the lowest id above ``since_id`` of a line still partial (None: none), so a tailing
        reader can keep its cursor before a line that will become final under that id."""
        seg = SegmentRow
        with OrmSession(self.engine) as s:
            rows = list(
                s.scalars(
                    select(seg)
                    .where(seg.session_id == session_id, seg.track == track,
                           seg.status == "final", seg.id > since_id)
                    .order_by(seg.id)
                    .limit(limit)
                ).all()
            )
            held = s.scalar(
                select(func.min(seg.id)).where(
                    seg.session_id == session_id, seg.track == track,
                    seg.status == "partial", seg.id > since_id,
                )
            )
            s.expunge_all()
        return rows, held

    def sessions_started_before(self, cutoff: dt.datetime) -> list[SessionRow]:
        """Sessions that started before ``cutoff`` and are not being recorded, oldest first."""
        with OrmSession(self.engine) as s:
            rows = list(
                s.scalars(
                    select(SessionRow)
                    .where(SessionRow.started_at < cutoff, SessionRow.status != "running")
                    .order_by(SessionRow.started_at)
                ).all()
            )
            s.expunge_all()
        return rows

    def dropped(self, session_id: int) -> list[DroppedRow]:
        """Utterances the engine discarded or trimmed, in audio order."""
        with OrmSession(self.engine) as s:
            rows = list(
                s.scalars(
                    select(DroppedRow)
                    .where(DroppedRow.session_id == session_id)
                    .order_by(DroppedRow.start_ms, DroppedRow.id)
                ).all()
            )
            s.expunge_all()
            return rows

    def minutes(self, session_id: int) -> MinutesRow | None:
        """The session's stored minutes, or None."""
        with OrmSession(self.engine) as s:
            row = s.scalars(select(MinutesRow).where(MinutesRow.session_id == session_id)).first()
            s.expunge_all()
            return row

    def save_minutes(self, session_id: int, content: dict[str, Any], *, source: str,
                     model: str | None, cost_usd: float) -> None:
        """Store (or replace) the session's minutes."""
        with self.engine.begin() as conn:
            conn.execute(delete(MinutesRow).where(MinutesRow.session_id == session_id))
            conn.execute(insert(MinutesRow).values(
                session_id=session_id, source=source, model=model, cost_usd=cost_usd,
                content=content, created_at=utcnow()))

    def delete_session(self, session_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(MinutesRow).where(MinutesRow.session_id == session_id))
            conn.execute(delete(DroppedRow).where(DroppedRow.session_id == session_id))
            conn.execute(delete(SpeakerTurnRow).where(SpeakerTurnRow.session_id == session_id))
            conn.execute(delete(SegmentRow).where(SegmentRow.session_id == session_id))
            conn.execute(delete(GapRow).where(GapRow.session_id == session_id))
            conn.execute(delete(SessionRow).where(SessionRow.id == session_id))

    # -- speakers ------------------------------------------------------------------------

    def known_speakers(self) -> list[KnownSpeakerRow]:
        with OrmSession(self.engine) as s:
            rows = list(s.scalars(select(KnownSpeakerRow).order_by(KnownSpeakerRow.name)).all())
            s.expunge_all()
            return rows

    def add_known_speaker(self, name: str, clip: bytes, clip_ms: int) -> None:
        """Store (or replace) a person's reference clip."""
        with self.engine.begin() as conn:
            conn.execute(delete(KnownSpeakerRow).where(KnownSpeakerRow.name == name))
            conn.execute(insert(KnownSpeakerRow).values(
                name=name, clip=clip, clip_ms=clip_ms, created_at=utcnow()))

    def speaker_turns(self, session_id: int) -> list[SpeakerTurnRow]:
        with OrmSession(self.engine) as s:
            rows = list(s.scalars(
                select(SpeakerTurnRow).where(SpeakerTurnRow.session_id == session_id)
                .order_by(SpeakerTurnRow.chunk, SpeakerTurnRow.start_ms, SpeakerTurnRow.id)
            ).all())
            s.expunge_all()
            return rows

    def save_speaker_turns(self, session_id: int, chunk: int,
                           turns: Sequence[tuple[int, int, str, str]]) -> None:
        """A chunk's turns (start_ms, end_ms, label, text), replacing any stored for it."""
        with self.engine.begin() as conn:
            conn.execute(delete(SpeakerTurnRow).where(SpeakerTurnRow.session_id == session_id,
                                                      SpeakerTurnRow.chunk == chunk))
            if turns:
                now = utcnow()
                conn.execute(insert(SpeakerTurnRow), [
                    {"session_id": session_id, "chunk": chunk, "start_ms": a, "end_ms": b,
                     "label": label[:64], "text": text, "created_at": now}
                    for a, b, label, text in turns])

    def clear_speaker_turns(self, session_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(SpeakerTurnRow).where(SpeakerTurnRow.session_id == session_id))

    def apply_speakers(self, session_id: int, changes: Sequence[tuple[int, Sequence[Any]]]) -> int:
        """Label lines, in one transaction: ``changes`` holds (row id, pieces) with pieces of
        :class:`captiond.speakers.attribute.Piece`. One piece sets the line's speaker; several
        split it: the row keeps the first piece, the others become new lines after it (item
        ids ``ITEM~2``, ``ITEM~3``, ...). Returns the lines added by splits."""
        added = 0
        with OrmSession(self.engine) as s, s.begin():
            for row_id, pieces in changes:
                row = s.get(SegmentRow, row_id)
                if row is None or row.session_id != session_id or not pieces:
                    continue
                first = pieces[0]
                row.speaker = first.speaker
                if len(pieces) == 1:
                    continue
                now = utcnow()
                row.audio_start_ms, row.audio_end_ms = first.start_ms, first.end_ms
                row.text = first.text
                row.words = _words_json(first.words) if row.words else None
                previous = row.item_id
                for n, p in enumerate(pieces[1:], 2):
                    item_id = f"{row.item_id}~{n}"[:128]
                    s.add(SegmentRow(
                        session_id=session_id, track=row.track, channel=row.channel,
                        item_id=item_id, previous_item_id=previous, seq=row.seq,
                        audio_start_ms=p.start_ms, audio_end_ms=p.end_ms, text=p.text,
                        status=row.status, engine=row.engine, language=row.language,
                        speaker=p.speaker, words=_words_json(p.words) if row.words else None,
                        error=None, created_at=now, updated_at=now))
                    previous = item_id
                    added += 1
        return added

    def rename_speaker(self, session_id: int, old: str, new: str) -> int:
        """Every line of ``old`` in the session becomes ``new``; how many lines changed."""
        with self.engine.begin() as conn:
            result = conn.execute(
                update(SegmentRow)
                .where(SegmentRow.session_id == session_id, SegmentRow.speaker == old)
                .values(speaker=new))
            conn.execute(
                update(SpeakerTurnRow)
                .where(SpeakerTurnRow.session_id == session_id, SpeakerTurnRow.label == old)
                .values(label=new))
            return int(result.rowcount or 0)

    # -- writes --------------------------------------------------------------------------

    def write_lines(self, session_id: int, lines: Iterable[Line]) -> int:
        """Insert or update lines (by session, track, channel, item id) in one transaction."""
        rows = [line_row(session_id, line) for line in lines]
        if not rows:
            return 0
        with self.engine.begin() as conn:
            _upsert_segments(conn, rows)
        return len(rows)

    def add_gap(
        self, session_id: int, *, channel: str, start_ms: int, end_ms: int, reason: str
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                insert(GapRow).values(
                    session_id=session_id,
                    channel=channel,
                    start_ms=start_ms,
                    end_ms=end_ms,
                    reason=reason[:200],
                    created_at=utcnow(),
                )
            )

    def add_dropped(
        self,
        session_id: int,
        *,
        channel: str,
        item_id: str,
        start_ms: int,
        end_ms: int,
        reason: str,
        text: str,
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                insert(DroppedRow).values(
                    session_id=session_id,
                    channel=channel,
                    item_id=item_id[:128],
                    start_ms=start_ms,
                    end_ms=end_ms,
                    reason=reason[:64],
                    text=text[:MAX_DROPPED_TEXT],
                    created_at=utcnow(),
                )
            )


def _words_json(words: Sequence[Any]) -> list[dict[str, Any]]:
    """Words of a split line as stored (the fields of :class:`captiond.events.Word`)."""
    return [{"text": w.word, "start_ms": w.start_ms, "end_ms": w.end_ms,
             "probability": w.probability} for w in words]


def line_row(session_id: int, line: Line) -> dict[str, Any]:
    now = utcnow()
    return {
        "session_id": session_id,
        "track": line.track,
        "channel": line.channel,
        "item_id": line.item_id,
        "previous_item_id": line.previous_item_id,
        "seq": line.seq,
        "audio_start_ms": int(line.audio_start_ms),
        "audio_end_ms": int(line.audio_end_ms),
        "text": line.text,
        "status": line.status.value,
        "engine": line.engine,
        "language": line.language,
        "speaker": line.speaker,
        "words": [asdict(w) for w in line.words] if line.words else None,
        "error": (line.error or None) and line.error[:500],
        "created_at": now,
        "updated_at": now,
    }


_UPDATABLE = (
    "previous_item_id",
    "seq",
    "audio_start_ms",
    "audio_end_ms",
    "text",
    "status",
    "engine",
    "language",
    "speaker",
    "words",
    "error",
    "updated_at",
)


def _upsert_segments(conn: Any, rows: list[dict[str, Any]]) -> None:
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = conn.dialect.name
    if dialect not in ("sqlite", "postgresql"):
        raise StoreError(f"database dialect {dialect!r} is not supported (use sqlite or postgresql)")
    dialect_insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
    stmt: Any = dialect_insert(SegmentRow)
    stmt = stmt.on_conflict_do_update(
        index_elements=["session_id", "track", "channel", "item_id"],
        set_={name: getattr(stmt.excluded, name) for name in _UPDATABLE},
    )
    conn.execute(stmt, rows)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def session_duration(row: SessionRow) -> dt.timedelta | None:
    if row.ended_at is None:
        return None
    start, end = row.started_at, row.ended_at
    if start.tzinfo is None:
        start = start.replace(tzinfo=dt.timezone.utc)
    if end.tzinfo is None:
        end = end.replace(tzinfo=dt.timezone.utc)
    return end - start


__all__ = [
    "Store",
    "SQLAlchemyError",
    "default_url",
    "line_row",
    "redact_url",
    "session_duration",
]

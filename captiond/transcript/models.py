"""The database schema (SQLAlchemy 2.x). Alembic migrations in ``migrations/`` create it.

Tables::

    sessions   one captioning run (a meeting): times, source, engine(s), status, cost
    segments   one line per (session, track, channel, item_id): order, audio times, text, status
    gaps       audio that was never transcribed (device lost, buffer overflow), per channel
    dropped    utterances an engine decoded (or cut) and then discarded or trimmed, and why
    minutes    the session's meeting minutes (offline or by a model), regenerated when asked
    known_speakers   a person's name and a 2-10 s reference clip of their voice
    speaker_turns    the turns a diarizing model returned for a session, per chunk

A test checks that these models and the migrations describe the same schema.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Base(DeclarativeBase):
    pass


class SessionRow(Base):
    __tablename__ = "sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    title: Mapped[str | None] = mapped_column(String(200))
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    ended_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # running | completed | interrupted
    status: Mapped[str] = mapped_column(String(16), default="running", index=True)
    source: Mapped[str] = mapped_column(String(500), default="")
    engine: Mapped[str] = mapped_column(String(64), default="")
    language: Mapped[str | None] = mapped_column(String(16))
    host: Mapped[str] = mapped_column(String(255), default="")
    pid: Mapped[int | None] = mapped_column(Integer)
    audio_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class SegmentRow(Base):
    __tablename__ = "segments"
    __table_args__ = (
        UniqueConstraint("session_id", "track", "channel", "item_id", name="uq_segments_item"),
        Index("ix_segments_session_time", "session_id", "audio_start_ms"),
        Index("ix_segments_session_speaker", "session_id", "speaker"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[int] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False
    )
    track: Mapped[str] = mapped_column(String(16), default="original")
    channel: Mapped[str] = mapped_column(String(64), default="")
    item_id: Mapped[str] = mapped_column(String(128), nullable=False)
    previous_item_id: Mapped[str | None] = mapped_column(String(128))
    seq: Mapped[int] = mapped_column(Integer, nullable=False)
    audio_start_ms: Mapped[int] = mapped_column(Integer, nullable=False)
    audio_end_ms: Mapped[int] = mapped_column(Integer, nullable=False)
    text: Mapped[str] = mapped_column(Text, default="")
    # partial | final | failed
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    engine: Mapped[str] = mapped_column(String(64), default="")
    language: Mapped[str | None] = mapped_column(String(16))
    speaker: Mapped[str | None] = mapped_column(String(64))
    words: Mapped[list[Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class GapRow(Base):
    __tablename__ = "gaps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[int] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False, index=True
    )
    channel: Mapped[str] = mapped_column(String(64), default="")
    start_ms: Mapped[int] = mapped_column(Integer, nullable=False)
    end_ms: Mapped[int] = mapped_column(Integer, nullable=False)
    reason: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DroppedRow(Base):
    """An utterance that gave no line (or lost its end), with the reason and the text dropped."""

    __tablename__ = "dropped"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[int] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False, index=True
    )
    channel: Mapped[str] = mapped_column(String(64), default="")
    item_id: Mapped[str] = mapped_column(String(128), default="")
    start_ms: Mapped[int] = mapped_column(Integer, nullable=False)
    end_ms: Mapped[int] = mapped_column(Integer, nullable=False)
    reason: Mapped[str] = mapped_column(String(64), default="")
    text: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class MinutesRow(Base):
    """A session's minutes: :mod:`captiond.exports.digest` JSON, one row per session."""

    __tablename__ = "minutes"
    __table_args__ = (UniqueConstraint("session_id", name="uq_minutes_session"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[int] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False
    )
    # offline | openai
    source: Mapped[str] = mapped_column(String(16), nullable=False)
    model: Mapped[str | None] = mapped_column(String(64))
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    content: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class KnownSpeakerRow(Base):
    """A person the diarizing model is told about: a name and a reference clip (WAV)."""

    __tablename__ = "known_speakers"
    __table_args__ = (UniqueConstraint("name", name="uq_known_speakers_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    clip: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    clip_ms: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SpeakerTurnRow(Base):
    """One turn of a diarized session: who spoke from ``start_ms`` to ``end_ms`` (session
    clock), as returned for chunk ``chunk`` (labels already made consistent across chunks)."""

    __tablename__ = "speaker_turns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[int] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False, index=True
    )
    chunk: Mapped[int] = mapped_column(Integer, nullable=False)
    start_ms: Mapped[int] = mapped_column(Integer, nullable=False)
    end_ms: Mapped[int] = mapped_column(Integer, nullable=False)
    label: Mapped[str] = mapped_column(String(64), nullable=False)
    text: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

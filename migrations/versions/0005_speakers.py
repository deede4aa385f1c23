"""speakers: known voices by name, the diarized turns of a session, lines found by speaker

``segments.speaker`` (since 0001) holds every line's speaker: Me/Them of a two-sided call,
or a label from ``captiond speakers``. This adds:

- ``known_speakers``: a name and a 2-10 s reference clip (16 kHz mono WAV) per person, sent
  to the diarizing model so its labels come back as names;
- ``speaker_turns``: the turns the diarizing model returned for a session, per chunk, so the
  labels can be attributed again (and a failed run resumed) without paying twice;
- an index on ``segments (session_id, speaker)`` for ``search --speaker``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "known_speakers",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("clip", sa.LargeBinary(), nullable=False),
        sa.Column("clip_ms", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("name", name="uq_known_speakers_name"),
    )
    op.create_table(
        "speaker_turns",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "session_id",
            sa.Integer(),
            sa.ForeignKey("sessions.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("chunk", sa.Integer(), nullable=False),
        sa.Column("start_ms", sa.Integer(), nullable=False),
        sa.Column("end_ms", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_speaker_turns_session_id", "speaker_turns", ["session_id"])
    op.create_index("ix_segments_session_speaker", "segments", ["session_id", "speaker"])


def downgrade() -> None:
    op.drop_index("ix_segments_session_speaker", "segments")
    op.drop_table("speaker_turns")
    op.drop_table("known_speakers")

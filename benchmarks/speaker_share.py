"""Share of line time attributed to the right speaker, with AMI reference turns as the
diarizing service's answer; and the size of the chunks ``captiond speakers`` uploads.

The meeting: ten 30-second AMI excerpts (``tests/data/speakers``, CC BY 4.0) joined, 23
people. Its reference turns become audio the fake Transcriptions endpoint
(``tests/fakes/openai_transcribe.py``, a real socket) diarizes (one tone per person), the lines
are cut from AMI's word times as a one-microphone engine cuts them (at pauses, whoever
speaks), the audio is kept as the daemon keeps it, and ``label_session`` runs the whole path:
chunks, upload, identity across chunks, attribution, splits. The score maps labels to people
one to one (most shared time first) and counts line time where the labelled person talks,
over line time where anyone talks. Target: >= 95%.

Then an hour of real speech (AMI + FLEURS from ``tests/data``) is cut in
``speakers.chunk_s`` chunks and encoded as they are uploaded: every chunk must be < 25 MB.

    python benchmarks/speaker_share.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import kit

kit.support("fakes")
_support = kit.support("speakers_support")
from fakes.openai_transcribe import FakeTranscriptions  # noqa: E402

ami_meeting, lines_from_words, mapping = _support.ami_meeting, _support.lines_from_words, _support.mapping
right_share, store_meeting, synthesise = _support.right_share, _support.store_meeting, _support.synthesise

from captiond import config  # noqa: E402
from captiond.speakers.attribute import Turn  # noqa: E402
from captiond.speakers.service import encode_chunk, label_session, openai_transcriber  # noqa: E402
from captiond.transcript.store import Store  # noqa: E402

MEETING_MS = 300_000


def share(chunk_s: float, with_words: bool) -> None:
    truth, words = ami_meeting()
    audio = synthesise(truth, MEETING_MS)
    lines = lines_from_words(words, with_words=with_words)
    with tempfile.TemporaryDirectory() as tmp, FakeTranscriptions() as fake:
        db = f"sqlite:///{tmp}/c.db"
        sid = store_meeting(db, Path(tmp) / "audio", audio, lines)
        cfg = config.parse(f'[audio]\nkeep_dir = "{tmp}/audio"\n[speakers]\nurl = "{fake.url}"\n'
                           f"chunk_s = {chunk_s}\n", env={})
        store = Store(db)
        out = label_session(store, cfg, sid, openai_transcriber(cfg, fake.key))
        found = [Turn(t.start_ms, t.end_ms, t.label) for t in store.speaker_turns(sid)]
        names = mapping(truth, found)
        rows = store.lines(sid)
        right, total = right_share(truth, rows, names)
        labels = len({t.speaker for t in found})
        store.close()
    # Who said each word. With word times, a stored word is found by its times and text;
    # without, the words of the stored lines, in order, are AMI's words in order.
    if with_words:
        who = {(w[0], w[1], w[3]): w[2] for excerpt in words for w in excerpt}
        pairs = [(who[(w["start_ms"], w["end_ms"], w["text"].strip())],
                  names.get(r.speaker or "")) for r in rows for w in r.words]
    else:
        spoken = [w[2] for line in lines for w in _line_words(line, words)]
        said = [names.get(r.speaker or "") for r in rows for _ in r.text.split()]
        pairs = list(zip(spoken, said, strict=True))
    words_right = sum(a == b for a, b in pairs) / len(pairs)
    people = len({t.speaker for t in truth})
    print(f"chunks of {chunk_s:>5.0f} s, {'word times' if with_words else 'no words  '}: "
          f"{100 * right / total:5.1f}% of line time right ({right / 1000:.1f} of "
          f"{total / 1000:.1f} s); words with their speaker {100 * words_right:.1f}%; {out.lines} lines, {out.split} split; {labels} labels for "
          f"{people} people; {out.sent} requests")


def _line_words(line, words):  # type: ignore[no-untyped-def]
    """AMI's words of one stored line (its time span, in order)."""
    flat = [w for excerpt in words for w in excerpt]
    inside = [w for w in flat if line.audio_start_ms <= w[0] and w[1] <= line.audio_end_ms]
    assert len(inside) == len(line.text.split()), "lines must be cut from the words"
    return inside


def chunk_sizes(minutes: float = 60.0, chunk_s: float = 1200.0) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("keep_size", kit.ROOT / "benchmarks" / "keep_size.py")
    assert spec is not None and spec.loader is not None
    keep_size = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(keep_size)
    meeting = keep_size.meeting
    from captiond.audio.block import AudioBlock
    from captiond.audio.resample import Resampler

    audio48 = meeting(minutes)
    audio = Resampler(16_000)(AudioBlock(audio48, 48_000, 0)).samples
    step = int(chunk_s * 16_000)
    sizes = [len(encode_chunk(audio[i:i + step])) / 1e6 for i in range(0, len(audio), step)]
    print(f"{minutes:.0f} min of speech in {chunk_s:.0f} s chunks: "
          + ", ".join(f"{s:.2f}" for s in sizes) + f" MB (largest {max(sizes):.2f} MB; "
          "limit 25 MB)")


def main(args: Any) -> None:
    for chunk_s in (1200.0, 30.0):
        for with_words in (True, False):
            share(chunk_s, with_words)
    chunk_sizes()


if __name__ == "__main__":
    kit.run(main, kit.parser(__doc__).parse_args())

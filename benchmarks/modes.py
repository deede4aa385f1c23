"""One transcript whatever the mode: the same audio through every way a user feeds captiond.

Runs the installed command line (``python -m captiond``) on each file in four modes:

- ``transcribe``: ``captiond transcribe FILE``;
- ``fast``: ``captiond run --source file:FILE --fast``;
- ``stdin``: ``ffmpeg -i FILE -f s16le -ac 1 -ar 16000 - | captiond run --source stdin --rate 16000``
  (a pipe faster than real time, the daemon in live mode);
- ``realtime``: ``captiond run --source file:FILE`` (the file at wall-clock pace, partials on).

Files: each English FLEURS clip, the five joined into one meeting (2 s apart; also at the
clips' own 48 kHz, ``fleurs-joined-48k``, which the stdin mode's ffmpeg resamples), each AMI
excerpt, and the AMI excerpts joined (2 s apart); every file ends with 2.5 s of silence.
References: FLEURS's transcripts; AMI's manual words (overlapping talk counted in full).

For each file and mode it prints the WER, the lines stored, the phrases of 4+ words said twice
in one line that the reference does not repeat, and, on AMI, the lines holding more than one
change of speaker (each word of a line gets the speaker whose reference turn covers its
middle) and the share of lines with none. ``--modes`` and ``--files`` pick; real time is
slow (``--modes transcribe fast stdin`` skips it). With ``--batch``, batch faster-whisper
(beam 5, its VAD filter) on the joined files for comparison.

    python benchmarks/modes.py [--modes transcribe fast stdin realtime] [--files fleurs-joined ami-joined] [--batch]
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import kit
import numpy as np

ROOT, FLEURS, AMI, RATE = kit.ROOT, kit.FLEURS, kit.AMI, kit.RATE
normalise, write_wav, load = kit.normalise, kit.write_wav, kit.decode
GAP_S = kit.JOIN_GAP_S
TRAIL_S = kit.PROGRAMME_TRAIL_S
MODES = ("transcribe", "fast", "stdin", "realtime")


def wer(ref: str, hyp: str) -> float:
    return kit.wer(ref, hyp or "<empty>")


def ami_words(name: str, offset_s: float = 0.0) -> list[tuple[float, float, str, str]]:
    rows = (AMI / f"{name}.words.tsv").read_text().splitlines()[1:]
    out = []
    for row in rows:
        start, end, speaker, word = row.split("\t")
        out.append((float(start) + offset_s, float(end) + offset_s, speaker, word))
    return sorted(out)


def corpus(tmp: Path) -> dict[str, tuple[Path, str, list[tuple[float, float, str, str]]]]:
    """name -> (wav file with trailing silence, reference text, reference words with speakers)."""
    files: dict[str, tuple[Path, str, list[tuple[float, float, str, str]]]] = {}
    silence = np.zeros(int(TRAIL_S * RATE), np.float32)
    gap = np.zeros(int(GAP_S * RATE), np.float32)
    joined: list[np.ndarray] = []
    refs: list[str] = []
    for clip in sorted(FLEURS.glob("fleurs-en-*.ogg")):
        audio = load(clip)
        ref = clip.with_suffix(".txt").read_text().strip()
        files[clip.stem] = (write_wav(tmp / f"{clip.stem}.wav", np.concatenate([audio, silence])), ref, [])
        joined += [audio, gap]
        refs.append(ref)
    files["fleurs-joined"] = (write_wav(tmp / "fleurs-joined.wav", np.concatenate([*joined, silence])),
                              " ".join(refs), [])
    # The same meeting at the clips' own 48 kHz: captiond resamples it (soxr), the stdin mode's
    # ffmpeg resamples it before the pipe (swresample).
    hi = [x for clip in sorted(FLEURS.glob("fleurs-en-*.ogg"))
          for x in (load(clip, 48_000), np.zeros(int(GAP_S * 48_000), np.float32))]
    hi.append(np.zeros(int(TRAIL_S * 48_000), np.float32))
    files["fleurs-joined-48k"] = (write_wav(tmp / "fleurs-joined-48k.wav", np.concatenate(hi), 48_000),
                                  " ".join(refs), [])
    joined, words, at = [], [], 0.0
    for clip in sorted(AMI.glob("*.flac")):
        if not (AMI / f"{clip.stem}.words.tsv").exists():
            continue
        audio = load(clip)
        own = ami_words(clip.stem)
        files[f"ami-{clip.stem}"] = (write_wav(tmp / f"ami-{clip.stem}.wav", np.concatenate([audio, silence])),
                                     " ".join(w for *_, w in own), own)
        words += ami_words(clip.stem, at)
        joined += [audio, gap]
        at += (len(audio) + len(gap)) / RATE
    files["ami-joined"] = (write_wav(tmp / "ami-joined.wav", np.concatenate([*joined, silence])),
                           " ".join(w for *_, w in words), words)
    return files


def run_mode(mode: str, wav: Path, db: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.environ.get("PYTHONPATH") or str(ROOT)}
    run = functools.partial(subprocess.run, env=env, check=True, capture_output=True, cwd=db.parent)
    cli = [sys.executable, "-m", "captiond"]
    url = f"sqlite:///{db}"
    if mode == "transcribe":
        cmd = [*cli, "transcribe", "--no-progress", "--db", url, str(wav)]
        run(cmd)
    elif mode == "fast":
        cmd = [*cli, "run", "--fast", "--source", f"file:{wav}", "--db", url]
        run(cmd)
    elif mode == "realtime":
        cmd = [*cli, "run", "--source", f"file:{wav}", "--db", url]
        run(cmd)
    elif mode == "stdin":
        ff = subprocess.Popen(["ffmpeg", "-v", "error", "-i", str(wav), "-f", "s16le", "-ac", "1",
                               "-ar", "16000", "-"], stdout=subprocess.PIPE)
        cmd = [*cli, "run", "--source", "stdin", "--rate", "16000", "--db", url]
        run(cmd, stdin=ff.stdout)
        ff.wait()
    else:
        raise SystemExit(f"unknown mode {mode}")


def stored_lines(db: Path) -> list[dict[str, object]]:
    from captiond.transcript.store import Store

    store = Store(f"sqlite:///{db}")
    try:
        session = store.list_sessions()[0][0]
        return [{"start": r.audio_start_ms, "end": r.audio_end_ms, "text": r.text,
                 "words": r.words or []} for r in store.lines(session.id) if r.text]
    finally:
        store.close()


def repeats(text: str, reference: str, n: int = 4) -> list[str]:
    """Phrases of ``n`` words said twice in the text more often than in the reference."""
    def grams(words: list[str]) -> Counter[str]:
        return Counter(" ".join(words[i:i + n]) for i in range(len(words) - n + 1))

    hyp, ref = grams(normalise(text).split()), grams(normalise(reference).split())
    return [g for g, c in hyp.items() if c > 1 and c > ref.get(g, 0)]


def speaker_changes(line: dict[str, object], ref: list[tuple[float, float, str, str]]) -> int:
    """Changes of speaker inside a line: each of its words gets the speaker whose reference
    word (else turn) covers the word's middle."""
    return max(0, len(line_speakers(line, ref)) - 1)


def line_speakers(line: dict[str, object], ref: list[tuple[float, float, str, str]]) -> list[str]:
    """The speakers of a line's words in turn: each word gets the speaker of the reference
    word nearest its middle (within 0.5 s), one with the same text first."""
    speakers: list[str] = []
    for w in line["words"]:  # type: ignore[union-attr]
        mid = (w["start_ms"] + w["end_ms"]) / 2000
        text = normalise(w["text"])
        near = [(normalise(word) != text, abs((s + e) / 2 - mid), spk)
                for s, e, spk, word in ref if s - 0.5 <= mid <= e + 0.5]
        if near:
            speaker = min(near)[2]
            if not speakers or speakers[-1] != speaker:
                speakers.append(speaker)
    return speakers


def main(args: argparse.Namespace) -> dict[str, Any]:
    results: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        files = corpus(tmp)
        names = args.files or list(files)
        for name in names:
            wav, ref, ref_words = files[name]
            for mode in args.modes:
                if mode == "realtime" and not args.files and not name.endswith("joined"):
                    continue
                db = tmp / f"{name}-{mode}.db"
                run_mode(mode, wav, db)
                lines = stored_lines(db)
                text = " ".join(str(line["text"]) for line in lines)
                row: dict[str, object] = {
                    "file": name, "mode": mode, "wer": round(100 * wer(ref, text), 1),
                    "lines": len(lines),
                    "repeated": sorted({g for line in lines for g in repeats(str(line["text"]), ref)}),
                }
                if ref_words:
                    changes = [speaker_changes(line, ref_words) for line in lines]
                    row["lines_over_one_change"] = sum(c > 1 for c in changes)
                    row["lines_no_change_pct"] = round(100 * sum(c == 0 for c in changes) / max(1, len(lines)), 1)
                results.append(row)
                if args.show:
                    for line in lines:
                        who = f" {'>'.join(line_speakers(line, ref_words))}" if ref_words else ""
                        print(f"    [{line['start'] / 1000:7.2f}]{who} {line['text']}")
                extra = (f"  >1 change {row['lines_over_one_change']}  no change {row['lines_no_change_pct']}%"
                         if ref_words else "")
                print(f"{name:15} {mode:10} WER {row['wer']:5.1f}%  lines {len(lines):3}  "
                      f"repeated {row['repeated'] or '-'}{extra}", flush=True)
            if args.batch and name.endswith("joined"):
                from faster_whisper import WhisperModel

                from captiond.engines.models import bundled_model_path

                model = WhisperModel(str(bundled_model_path()), device="cpu", compute_type="int8")
                segments, _ = model.transcribe(str(wav), beam_size=5, vad_filter=True, language="en")
                text = " ".join(s.text for s in segments)
                row = {"file": name, "mode": "batch", "wer": round(100 * wer(ref, text), 1)}
                results.append(row)
                print(f"{name:15} {'batch':10} WER {row['wer']:5.1f}%", flush=True)
    return {"runs": results}


if __name__ == "__main__":
    ap = kit.parser(__doc__)
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--files", nargs="+", help="names (fleurs-en-000, fleurs-joined, "
                    "fleurs-joined-48k, ami-dev00, ami-joined; default all, real time only on "
                    "the joined files)")
    ap.add_argument("--batch", action="store_true", help="batch faster-whisper on the joined files")
    ap.add_argument("--show", action="store_true", help="print every line")
    kit.run(main, ap.parse_args())

"""Languages with a multilingual model: accuracy with auto-detection against the language forced.

For each FLEURS clip (de, es, fr, pt by default) ``captiond transcribe`` runs twice with the
same multilingual model, once with ``--language ""`` (each utterance's language detected) and
once with ``--language`` set to the clip's language. Per run it prints WER and CER against the
reference (normalised as everywhere in captiond), the languages its lines stored (detection is
correct when every line stores the clip's language) and the process CPU seconds (model load
included; meaningful on a busy machine, unlike wall time). Then the clips and fleurs-en-000
are joined into one recording (:data:`JOIN_GAP_S` of silence between them) and transcribed
once with auto-detection: per clip, the languages its lines stored and its WER, as a meeting
that switches language sees them. The model defaults to Whisper base
from the ``[dev]`` extra (the tests' stand-in for ``local.model = base``), joined into a
temporary folder; ``--model`` takes any model name or directory.

``--ami``: also the eleven English AMI meeting excerpts (far-field, short turns: where
detection is unsure), auto-detected: how many lines stored a language other than English.

    python benchmarks/languages.py [--model base] [--langs de es fr pt] [--threads 2] [--ami]
"""

from __future__ import annotations

import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import wave
from pathlib import Path
from typing import Any

import kit
import numpy as np
from kit import AMI, FLEURS, ROOT, assemble_whisper_base, reference

#: Silence between the clips of the joined recording.
JOIN_GAP_S = 1.0
RATE = 16_000


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def transcribe(clip: Path, model: str, language: str, threads: int, db: Path) -> tuple[list[tuple[str | None, str, int]], float]:
    """The final lines (language, text, start ms) of one ``captiond transcribe`` run and its
    CPU seconds."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CAPTIOND_OVERLAY_PORT": "0"}
    before = children_cpu_s()
    proc = subprocess.run(
        [sys.executable, "-m", "captiond", "--db", f"sqlite:///{db}", "transcribe", str(clip),
         "--no-progress", "--model", model, "--language", language, "--threads", str(threads)],
        env=env, capture_output=True, text=True, timeout=900,
    )
    cpu = children_cpu_s() - before
    if proc.returncode != 0:
        sys.exit(f"captiond transcribe failed:\n{proc.stderr}")
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT language, text, audio_start_ms FROM segments WHERE status = 'final' AND text != '' "
            "AND session_id = (SELECT max(id) FROM sessions) ORDER BY seq").fetchall()
    return rows, cpu


def main(args: Any) -> dict[str, Any]:
    import jiwer

    kit.require([FLEURS / f"fleurs-{lang}-000.ogg" for lang in [*args.langs, "en"]])
    figures: dict[str, Any] = {"clips": []}
    with tempfile.TemporaryDirectory(prefix="captiond-languages-") as tmp:
        model = args.model or str(assemble_whisper_base(Path(tmp) / "whisper-base"))
        print(f"model {args.model or 'Whisper base ([dev] extra)'}; load {os.getloadavg()[0]:.1f}")
        print(f"{'clip':16} {'language':9} {'WER':>6} {'CER':>6} {'lines':>5}  {'stored':12} "
              f"{'detected':8} {'cpu_s':>6}")
        totals: dict[str, list[float]] = {}
        for lang in args.langs:
            clip = FLEURS / f"fleurs-{lang}-000.ogg"
            ref = reference(clip)
            for mode, asked in (("auto", ""), ("forced", lang)):
                rows, cpu = transcribe(clip, model, asked, args.threads, Path(tmp) / "c.db")
                hyp = kit.normalise(" ".join(row[1] for row in rows))
                wer, cer = jiwer.wer(ref, hyp), jiwer.cer(ref, hyp)
                stored = sorted({str(row[0]) for row in rows})
                ok = "yes" if stored == [lang] else "NO"
                detected = ok if mode == "auto" else "-"
                totals.setdefault(mode, []).extend([wer, cer])
                print(f"{clip.stem:16} {mode:9} {wer:6.3f} {cer:6.3f} {len(rows):5}  "
                      f"{'+'.join(stored):12} {detected:8} {cpu:6.1f}")
                figures["clips"].append({"clip": clip.stem, "mode": mode, "wer": wer, "cer": cer,
                                         "lines": len(rows), "stored": stored, "cpu_s": cpu})
        for mode, values in totals.items():
            wers, cers = values[0::2], values[1::2]
            print(f"{'mean':16} {mode:9} {sum(wers) / len(wers):6.3f} {sum(cers) / len(cers):6.3f}")
            figures[f"mean_{mode}"] = {"wer": sum(wers) / len(wers), "cer": sum(cers) / len(cers)}
        figures["joined"] = joined(model, args.langs, args.threads, Path(tmp))
        if args.ami:
            figures["ami"] = ami(model, args.threads, Path(tmp))
        print(f"load {os.getloadavg()[0]:.1f}")
    return figures


def ami(model: str, threads: int, tmp: Path) -> dict[str, Any]:
    """The English AMI excerpts, auto-detected: lines per stored language."""
    counts: dict[str, int] = {}
    wrong: list[str] = []
    cpu = 0.0
    for path in sorted(AMI.glob("*.flac")):
        rows, seconds = transcribe(path, model, "", threads, tmp / "c.db")
        cpu += seconds
        for language, text, start_ms in rows:
            counts[str(language)] = counts.get(str(language), 0) + 1
            if language != "en":
                wrong.append(f"  {path.stem} {start_ms / 1000:5.1f}s [{language}] {text}")
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
    print(f"\nAMI excerpts (English), auto-detected: lines by language: {summary}; "
          f"cpu_s {cpu:.1f}")
    print("\n".join(wrong))
    return {"lines_by_language": counts, "cpu_s": cpu}


def joined(model: str, langs: list[str], threads: int, tmp: Path) -> list[dict[str, Any]]:
    """The clips and fleurs-en-000 as one recording, auto-detected: languages and WER per clip."""
    import jiwer
    from faster_whisper import decode_audio

    clips = [FLEURS / f"fleurs-{lang}-000.ogg" for lang in [*langs, "en"]]
    parts, spans, t = [], [], 0.0
    for clip in clips:
        audio = decode_audio(str(clip), RATE)
        parts += [audio, np.zeros(int(JOIN_GAP_S * RATE), np.float32)]
        spans.append((t, t + len(audio) / RATE))
        t += len(audio) / RATE + JOIN_GAP_S
    path = tmp / "joined.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes((np.clip(np.concatenate(parts), -1, 1) * 32767).astype("<i2").tobytes())
    rows, cpu = transcribe(path, model, "", threads, tmp / "c.db")
    print(f"\njoined recording ({' + '.join(c.stem.split('-')[1] for c in clips)}, {t:.0f} s), "
          f"auto-detected, cpu_s {cpu:.1f}")
    print(f"{'clip':16} {'WER':>6} {'lines':>5}  {'stored':12} detected")
    out = []
    for clip, (start, end) in zip(clips, spans):
        mine = [r for r in rows if start - 0.5 <= r[2] / 1000 < end]
        lang = clip.stem.split("-")[1]
        stored = [str(r[0]) for r in mine]
        wer = jiwer.wer(reference(clip), kit.normalise(" ".join(r[1] for r in mine)))
        right = sum(1 for x in stored if x == lang)
        print(f"{clip.stem:16} {wer:6.3f} {len(mine):5}  {'+'.join(sorted(set(stored))):12} "
              f"{right}/{len(stored)} lines")
        out.append({"clip": clip.stem, "wer": wer, "lines": len(mine),
                    "stored": sorted(set(stored)), "right_lines": right})
    return out


if __name__ == "__main__":
    ap = kit.parser(__doc__)
    ap.add_argument("--model", default="", help="model name or directory (default: Whisper "
                    "base from the [dev] extra)")
    ap.add_argument("--langs", nargs="+", default=["de", "es", "fr", "pt"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ami", action="store_true", help="also the English AMI excerpts")
    kit.run(main, ap.parse_args())

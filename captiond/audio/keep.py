"""The meeting's audio, kept: one Ogg Opus file per session, written while the session runs.

Why Ogg: every Ogg page carries its own checksum and the muxer writes a page at least every
:data:`PAGE_DURATION_US`, flushed to the file at once, so a daemon killed with SIGKILL leaves a
file that decodes up to its last complete page (at most about half a second before the kill);
a reader drops the torn page at the end. The file is on the session's clock: sample 0 is the
session's start and audio the source lost is written as silence, so a line's
``audio_start_ms`` is its place in the file.

Parts: :class:`Mixer` [pure] joins the streams of a session (``mic+system``) into one mono
signal on the session clock; :class:`OpusWriter` encodes and muxes; :class:`AudioKeeper` is
the daemon's side (a thread fed by a bounded queue: capture never waits on the encoder);
:func:`plan_retention` [pure] chooses the files that age and total size retire.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from captiond.audio.block import AudioBlock
from captiond.errors import CaptiondError

log = logging.getLogger("captiond.keep")

#: Sample rate of kept audio: what the transcription models hear (Opus "wideband").
KEEP_RATE = 16_000
#: Longest Ogg page: what a kill can lose at most, besides the encoder's 20 ms frame.
PAGE_DURATION_US = 500_000
#: Audio the keeper's queue holds before it drops blocks (the encoder runs far faster).
KEEP_QUEUE_S = 20.0
#: A stream this far behind the others is taken as silent so the mix goes on (with the page
#: time, what a kill can lose in a session of several streams stays under 2 s).
MAX_SKEW_S = 1.0
#: Samples the mixer hands to the encoder at once (bounds memory across long gaps).
MIX_CHUNK = KEEP_RATE
#: How long closing the file may take at the end of a session.
CLOSE_TIMEOUT_S = 10.0
#: Kept files are private, as the transcripts are.
PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700
#: The file name of a session's audio.
FILE_RE = re.compile(r"session-(\d+)\.ogg")


class KeptAudioError(CaptiondError):
    """Kept audio that is missing or cannot be read."""


def audio_dir(cfg: Any) -> Path:
    """Where kept audio lives: ``audio.keep_dir``, else ``audio/`` in the data directory."""
    if cfg["audio.keep_dir"]:
        return Path(cfg["audio.keep_dir"]).expanduser()
    return Path(cfg.data_dir()) / "audio"


def audio_path(directory: Path, session_id: int) -> Path:
    return directory / f"session-{session_id}.ogg"


def remove(directory: Path, session_id: int) -> bool:
    """Delete a session's kept audio; True when there was a file."""
    try:
        audio_path(directory, session_id).unlink()
    except FileNotFoundError:
        return False
    return True


# -- the mix [pure] ------------------------------------------------------------------------


@dataclass
class _Track:
    pieces: list[tuple[int, np.ndarray]] = field(default_factory=list)
    end: int = 0
    ended: bool = False


class Mixer:
    """Streams of float32 samples at one rate, each placed by its start sample on the session
    clock, in; one mono signal from sample 0 out, in order, gaps as silence.

    A stream holds the mix back until it has delivered up to that point, but never more than
    ``max_skew`` samples behind the stream that is furthest ahead (a stalled stream is taken
    as silence; what it delivers later for that stretch is dropped)."""

    def __init__(self, channels: Sequence[str] = (),
                 max_skew: int = int(MAX_SKEW_S * KEEP_RATE)) -> None:
        """``channels``: the streams known from the start (each holds the mix back from its
        first block on; a stream first seen later joins the mix where it is)."""
        self.pos = 0
        self.max_skew = max_skew
        self._tracks: dict[str, _Track] = {c: _Track() for c in channels}
        self.late_samples = 0

    def push(self, channel: str, start: int, samples: np.ndarray) -> None:
        track = self._tracks.setdefault(channel, _Track(end=self.pos))
        if start < self.pos:  # already mixed: too late for the file
            cut = min(len(samples), self.pos - start)
            self.late_samples += cut
            samples, start = samples[cut:], start + cut
        if not len(samples):
            return
        if start < track.end:  # overlaps what this stream gave before: keep the first
            cut = min(len(samples), track.end - start)
            samples, start = samples[cut:], start + cut
            if not len(samples):
                return
        track.pieces.append((start, np.asarray(samples, dtype=np.float32)))
        track.end = start + len(samples)

    def end(self, channel: str) -> None:
        """The stream delivers nothing more (its source ended): it holds nothing back."""
        self._tracks.setdefault(channel, _Track(end=self.pos)).ended = True

    def ready(self) -> int:
        """The sample up to which the mix can be written now."""
        waiting = [t.end for t in self._tracks.values() if not t.ended]
        ends = [t.end for t in self._tracks.values()]
        if not ends:
            return self.pos
        lead = max(ends)
        upto = min(waiting) if waiting else lead
        return max(self.pos, upto, lead - self.max_skew)

    def pop(self, upto: int | None = None) -> Iterator[np.ndarray]:
        """The mix from :attr:`pos` to ``upto`` (default :meth:`ready`), in chunks of at most
        :data:`MIX_CHUNK` samples."""
        target = self.ready() if upto is None else upto
        while self.pos < target:
            stop = min(target, self.pos + MIX_CHUNK)
            out = np.zeros(stop - self.pos, dtype=np.float32)
            for track in self._tracks.values():
                keep: list[tuple[int, np.ndarray]] = []
                for start, data in track.pieces:
                    end = start + len(data)
                    lo, hi = max(start, self.pos), min(end, stop)
                    if lo < hi:
                        out[lo - self.pos:hi - self.pos] += data[lo - start:hi - start]
                    if end > stop:
                        keep.append((start, data))
                track.pieces = keep
                track.end = max(track.end, stop)
            self.pos = stop
            np.clip(out, -1.0, 1.0, out=out)
            yield out

    def finish(self) -> Iterator[np.ndarray]:
        """Everything left, at the end of the session."""
        lead = max((t.end for t in self._tracks.values()), default=self.pos)
        yield from self.pop(lead)


# -- the file ------------------------------------------------------------------------------


class OpusWriter:
    """Mono float32 at :data:`KEEP_RATE` in, Ogg Opus on disk, a page at least every
    :data:`PAGE_DURATION_US` flushed to the file as soon as it is complete."""

    def __init__(self, path: Path, *, bitrate: int) -> None:
        import av

        path.parent.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
        os.close(fd)
        self.path = path
        self._av = av
        self._container: Any = av.open(
            str(path), "w", format="ogg",
            options={"page_duration": str(PAGE_DURATION_US), "flush_packets": "1"},
        )
        try:
            stream: Any = self._container.add_stream("libopus", rate=KEEP_RATE, layout="mono")
            stream.bit_rate = bitrate
            stream.codec_context.options = {"application": "voip"}
        except BaseException:
            self._container.close()
            raise
        self._stream = stream
        self._pts = 0
        self.samples = 0
        self._closed = False

    def write(self, samples: np.ndarray) -> None:
        if not len(samples):
            return
        frame = self._av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples, dtype=np.float32).reshape(1, -1),
            format="flt", layout="mono")
        frame.sample_rate = KEEP_RATE
        frame.pts = self._pts
        self._pts += len(samples)
        self.samples += len(samples)
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        """Flush the encoder and end the file (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        finally:
            self._container.close()


def iter_audio(path: Path, rate: int = KEEP_RATE) -> Iterator[np.ndarray]:
    """A kept file's audio as mono float32 pieces at ``rate``, decoded as they are read; a
    file torn by a crash reads up to its last complete page."""
    import av

    if not path.exists():
        raise KeptAudioError(f"no kept audio at {path}")
    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
    try:
        container: Any = av.open(str(path))
    except av.error.FFmpegError as exc:
        raise KeptAudioError(f"cannot read kept audio {path}: {exc} (the file is damaged)") from exc
    with container:
        try:
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    yield out.to_ndarray().reshape(-1)
        except (av.error.InvalidDataError, av.error.EOFError):
            pass  # the torn end of a file whose writer was killed
        for out in resampler.resample(None):
            yield out.to_ndarray().reshape(-1)


def read_audio(path: Path, rate: int = KEEP_RATE) -> np.ndarray:
    """A kept file as one array (see :func:`iter_audio`)."""
    parts = list(iter_audio(path, rate))
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)


class AudioKeeper:
    """The session's audio to its file, off the event loop.

    :meth:`feed` never blocks: blocks go to a bounded queue (:data:`KEEP_QUEUE_S` of audio) and
    a full queue drops the block (counted in :attr:`dropped_s`; the file then has silence
    there). A thread resamples each stream to :data:`KEEP_RATE`, mixes and encodes.
    """

    def __init__(self, path: Path, *, bitrate: int, channels: Sequence[str] = ("",),
                 block_s: float = 0.032) -> None:
        from captiond.audio.resample import Resampler

        self.path = path
        self._writer = OpusWriter(path, bitrate=bitrate)
        self._mixer = Mixer(channels)
        self._resamplers: dict[str, Resampler] = {}
        self._new_resampler = Resampler
        self._queue: queue.Queue[tuple[str, AudioBlock | None] | None] = queue.Queue(
            max(16, int(KEEP_QUEUE_S / block_s)))
        self.dropped_s = 0.0
        self.error: str | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="captiond-keep", daemon=True)
        self._thread.start()

    def feed(self, channel: str, block: AudioBlock) -> None:
        """A capture block of ``channel`` (any rate; placed by its ``start``)."""
        if self._closed or self.error is not None:
            return
        try:
            self._queue.put_nowait((channel, block))
        except queue.Full:
            self.dropped_s += block.duration_s

    def end(self, channel: str) -> None:
        """``channel``'s source ended."""
        if not self._closed:
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait((channel, None))

    def drain(self, timeout: float | None = None) -> None:
        """Wait until every block fed so far is encoded and in the file's pages."""
        self._queue.join() if timeout is None else _join(self._queue, timeout)

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Write what is left and end the file (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            log.warning("keep.close_timeout path=%s timeout_s=%.0f (the encoder is stuck; the "
                        "file holds what was written)", self.path, timeout)
            return
        self._thread.join(timeout)

    @property
    def seconds(self) -> float:
        return self._writer.samples / KEEP_RATE

    def _run(self) -> None:
        try:
            while True:
                item = self._queue.get()
                try:
                    if item is None:
                        for chunk in self._mixer.finish():
                            self._writer.write(chunk)
                        return
                    channel, block = item
                    if block is None:
                        self._mixer.end(channel)
                    else:
                        self._add(channel, block)
                    for chunk in self._mixer.pop():
                        self._writer.write(chunk)
                finally:
                    self._queue.task_done()
        except Exception as exc:  # noqa: BLE001 - kept audio never stops the captions
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("keep.failed path=%s error=%r (the session goes on without its audio)",
                      self.path, self.error)
            while True:  # unblock drain() callers
                try:
                    self._queue.get_nowait()
                    self._queue.task_done()
                except queue.Empty:
                    break
        finally:
            with contextlib.suppress(Exception):
                self._writer.close()

    def _add(self, channel: str, block: AudioBlock) -> None:
        if block.rate != KEEP_RATE:
            resample = self._resamplers.get(channel)
            if resample is None:
                resample = self._resamplers[channel] = self._new_resampler(KEEP_RATE)
            block = resample(block)
        self._mixer.push(channel, block.start, block.samples)


def _join(q: queue.Queue[Any], timeout: float) -> None:
    import time

    deadline = time.monotonic() + timeout
    with q.all_tasks_done:
        while q.unfinished_tasks:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            q.all_tasks_done.wait(left)


# -- retention [pure plan, thin I/O] -----------------------------------------------------------


@dataclass(frozen=True)
class KeptFile:
    session_id: int
    path: Path
    size: int
    mtime: float


def plan_retention(files: Sequence[KeptFile], *, now: float, max_age_s: float,
                   max_bytes: int, keep: frozenset[int] = frozenset()) -> list[KeptFile]:
    """Files to delete: older than ``max_age_s`` (0: no age limit), then the oldest until the
    rest fit in ``max_bytes`` (0: no size limit). Sessions in ``keep`` (being recorded) stay."""
    doomed: list[KeptFile] = []
    alive: list[KeptFile] = []
    for f in sorted(files, key=lambda f: (f.mtime, f.session_id)):
        if f.session_id not in keep and max_age_s > 0 and now - f.mtime > max_age_s:
            doomed.append(f)
        else:
            alive.append(f)
    if max_bytes > 0:
        total = sum(f.size for f in alive)
        for f in list(alive):
            if total <= max_bytes:
                break
            if f.session_id in keep:
                continue
            doomed.append(f)
            total -= f.size
    return doomed


def list_kept(directory: Path) -> list[KeptFile]:
    out: list[KeptFile] = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return out
    for entry in entries:
        m = FILE_RE.fullmatch(entry.name)
        if m is None or not entry.is_file():
            continue
        st = entry.stat()
        out.append(KeptFile(int(m.group(1)), Path(entry.path), st.st_size, st.st_mtime))
    return out


def apply_retention(cfg: Any, *, now: float, keep: frozenset[int] = frozenset()) -> list[int]:
    """Delete the kept files that ``audio.keep_days`` and ``audio.keep_max_mb`` retire; the
    sessions whose audio went."""
    directory = audio_dir(cfg)
    doomed = plan_retention(list_kept(directory), now=now,
                            max_age_s=cfg["audio.keep_days"] * 86_400.0,
                            max_bytes=int(cfg["audio.keep_max_mb"]) * 1_000_000, keep=keep)
    for f in doomed:
        with contextlib.suppress(FileNotFoundError):
            f.path.unlink()
    if doomed:
        log.info("keep.retired sessions=%s", ",".join(str(f.session_id) for f in doomed))
    return [f.session_id for f in doomed]

"""``--engine auto``: the OpenAI engine while the service works, the local engine while not.

:class:`AutoEngine` is an engine like the others (24 kHz in, one chain of items out), built from
two engine factories. It runs OpenAI first. When that fails fatally (key refused, HTTP
401/403) or has had no ready session for ``grace_s``, it falls back mid-meeting:

1. the OpenAI engine is detached: every utterance it had not got text for yet (buffered during
   the outage, or sent and unanswered) is transcribed by the local Whisper model under its
   own item id, so no speech is lost and the order stays;
2. the following audio goes to a fresh local engine.

While local, it probes the service every ``probe_s`` (handshake + ``session.created``). When a
probe succeeds it switches back at the next pause of the local engine (no utterance open):
the local engine finishes its last utterance, the audio after it goes to a fresh OpenAI
engine. Each engine run gets its own item-id prefix, and the ``previous_item_id`` of each run's
first item is rewritten to the last item before it, so the chain stays continuous (the
hand-over and the re-linking are :mod:`captiond.engines.handover`'s, shared with the live
reload's engine switch). No queue of its own: the running engine reads the pipeline's bounded
queue through the hand-over, so a live source drops (and records a gap) and a pipe or
``--fast`` waits, as with any other engine.
:meth:`engine_for` tells the pipeline which engine produced each line (stored per line).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np

from captiond.audio.block import AudioBlock, pcm16_to_float
from captiond.engines.base import Emit, Engine
from captiond.engines.handover import Chain, Relay
from captiond.engines.localcore import Final
from captiond.engines.openai import OpenAIEngine, probe
from captiond.errors import EngineFatal
from captiond.events import Gap, ItemCompleted, ItemFailed, TranscriptEvent
from captiond.realtime.protocol import SAMPLE_RATE

log = logging.getLogger("captiond.engine.auto")

#: How long a finished engine run may take to return its last results when switching.
SWITCH_DRAIN_S = 30.0
#: At the end of the input: the OpenAI engine unreachable this long gets no more waiting; what
#: it holds is transcribed locally at once (a session that just dropped may come back).
STOP_UNREACHABLE_S = 2.0
#: How often the end of a run checks whether the service is still unreachable.
STOP_POLL_S = 0.1
#: After detaching at the end, how long the OpenAI run may take to close its sockets.
DETACHED_CLOSE_S = 5.0
#: Probe handshake bound.
PROBE_TIMEOUT_S = 10.0

#: ``decode(samples_16k, offset_ms) -> Final``: the local model, blocking.
Decode = Callable[[np.ndarray, int], Final]


class AutoEngine:
    sample_rate = SAMPLE_RATE

    def __init__(
        self,
        make_openai: Callable[[str], OpenAIEngine],
        make_local: Callable[[str], Engine],
        *,
        decode: Decode,
        grace_s: float = 30.0,
        probe_s: float | None = None,
        url: str = "",
        api_key: str = "",
        language: str | None = None,
    ) -> None:
        self.make_openai = make_openai
        self.make_local = make_local
        self.decode = decode
        self.grace_s = grace_s
        self.probe_s = probe_s if probe_s is not None else max(grace_s, 5.0)
        self._url = url
        self._key = api_key
        self.language = language
        self.current: Engine | None = None
        self._gap_sink: Callable[[Any], None] | None = None
        self._drop_sink: Callable[[Any], None] | None = None
        #: The last live reload of the engine settings (None: as built).
        self._settings: tuple[Any, float, bool] | None = None
        #: Engines used so far, in order ("openai", "openai+local"); "auto" before the run.
        self.name = "auto"
        self.used: list[str] = []
        self.switches = 0
        self._engine_of: dict[str, str] = {}
        self._chain = Chain()
        self._openai_cost = 0.0
        self._rescues: list[asyncio.Future[Any]] = []
        #: Rescued utterances by future: (item id, start ms, end ms), for what never finished.
        self._rescued: dict[asyncio.Future[Any], tuple[str, int, int]] = {}
        self._given_up: set[str] = set()
        self._probe_ok = False
        self._next_probe = 0.0
        self._probe_task: asyncio.Task[Any] | None = None

    # -- what the pipeline sees ------------------------------------------------------------------

    def engine_for(self, item_id: str) -> str:
        """The engine that produced this line's text."""
        return self._engine_of.get(item_id, self.current.name if self.current else "auto")

    def set_gap_sink(self, fn: Callable[[Any], None]) -> None:
        self._gap_sink = fn

    def set_drop_sink(self, fn: Callable[[Any], None]) -> None:
        self._drop_sink = fn

    def update_settings(self, params: Any, partial_interval_s: float,
                        word_timestamps: bool) -> None:
        """Live reload: to the engine running now, and to every engine made after it."""
        self._settings = (params, partial_interval_s, word_timestamps)
        if self.current is not None:
            self._apply_settings(self.current)

    def _apply_settings(self, engine: Engine) -> None:
        if self._settings is None:
            return
        params, partial_interval_s, word_timestamps = self._settings
        if engine.sample_rate != params.rate:  # the local engine runs at 16 kHz
            params = dataclasses.replace(params, rate=engine.sample_rate)
        engine.update_settings(params, partial_interval_s, word_timestamps)

    def stats(self) -> dict[str, Any]:
        inner = self.current.stats() if self.current is not None else {}
        cost = self._openai_cost
        if isinstance(self.current, OpenAIEngine):
            cost += self.current.cost_usd()
        return {**inner, "engine": "auto", "active": inner.get("engine"),
                "switches": self.switches, "cost_usd": round(cost, 4)}

    # -- run ---------------------------------------------------------------------------------

    async def run(self, audio: AsyncIterator[AudioBlock], emit: Emit) -> None:
        relay = Relay(audio)
        mode = "openai"
        runs = 0
        try:
            while True:
                runs += 1
                suffix = "" if runs == 1 else str(runs)
                if mode == "openai":
                    engine: Engine = self.make_openai(f"oa{suffix}-")
                else:
                    engine = self.make_local(f"loc{suffix}")
                if self._gap_sink is not None:
                    engine.set_gap_sink(self._gap_sink)
                if self._drop_sink is not None:
                    engine.set_drop_sink(self._drop_sink)
                # Built from the config at start: a live reload since then still holds.
                self._apply_settings(engine)
                ended = await self._run_one(engine, relay, emit)
                if isinstance(engine, OpenAIEngine):
                    self._openai_cost += engine.cost_usd()
                if ended:
                    break
                self.switches += 1
                self._chain.next_generation()
                mode = "local" if mode == "openai" else "openai"
                log.warning("engine.switched to=%s", mode)
        finally:
            if self._probe_task is not None:
                self._probe_task.cancel()
            if self._rescues:
                await asyncio.wait(self._rescues, timeout=SWITCH_DRAIN_S)
                self._give_up_rescues(emit)

    async def _run_one(self, engine: Engine, relay: Relay, emit: Emit) -> bool:
        """Feed ``engine`` until the input ends (True) or it is time to switch (False): it
        reads the stream itself until :meth:`_should_switch`, so the next engine starts with
        the next block (the pipeline's bounded queue is the only queue on the way)."""
        self.current = engine
        if engine.name not in self.used:
            self.used.append(engine.name)
            self.name = "+".join(self.used)
        self._probe_ok = False

        def stop() -> bool:
            if not self._should_switch(engine):
                return False
            if isinstance(engine, OpenAIEngine) and not engine.detached:
                # Before the engine sees the end of its audio: what it holds is rescued.
                self._rescue(engine.detach(), emit)
            return True

        task, _handed_over = await relay.start(
            engine, self._chain.emitter(self._recorder(engine.name, emit)), stop,
            rate=engine.sample_rate if engine.sample_rate != SAMPLE_RATE else None,
            name=f"auto-{engine.name}",
        )
        # Not exhausted: a switch was asked for, or the engine ended on its own (a failure).
        ended = relay.exhausted
        if isinstance(engine, OpenAIEngine) and not ended and not engine.detached:
            self._rescue(engine.detach(), emit)
        try:
            if ended and isinstance(engine, OpenAIEngine):
                await self._end_openai(engine, task, emit)
            else:
                await asyncio.wait_for(asyncio.shield(task), SWITCH_DRAIN_S)
        except EngineFatal as exc:
            log.error("engine.fatal name=%s error=%s", engine.name, exc)
            if isinstance(engine, OpenAIEngine) and not engine.detached:
                self._rescue(engine.detach(), emit)
        except TimeoutError:
            log.error("engine.switch_timeout name=%s", engine.name)
            task.cancel()
        return ended

    async def _end_openai(self, engine: OpenAIEngine, task: asyncio.Task[None],
                          emit: Emit) -> None:
        """The input ended on OpenAI (end of file, or the daemon stops): wait for the last
        answers while the service answers; when it is unreachable, or has not answered within
        :data:`SWITCH_DRAIN_S`, every utterance still without text is transcribed locally.
        Speech the daemon took in is never dropped for an unreachable service."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SWITCH_DRAIN_S
        while not task.done():
            if not engine.detached and (
                engine.fatal is not None or engine.unreachable_s() >= STOP_UNREACHABLE_S
            ):
                log.warning("engine.stop_unreachable name=%s unreachable_s=%.1f by=local",
                            engine.name, engine.unreachable_s())
                self._rescue(engine.detach(), emit)
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                log.warning("engine.stop_timeout name=%s waited_s=%.0f by=local",
                            engine.name, SWITCH_DRAIN_S)
                self._rescue(engine.detach(), emit)
                break
            await asyncio.wait({task}, timeout=min(STOP_POLL_S, remaining))
        # Detached, the run ends as soon as its sockets are closed.
        await asyncio.wait_for(asyncio.shield(task), DETACHED_CLOSE_S)

    def _should_switch(self, engine: Engine) -> bool:
        now = time.monotonic()
        if isinstance(engine, OpenAIEngine):
            if engine.fatal is not None:
                return True
            return engine.unreachable_s(now) > self.grace_s
        # Local: probe the service now and then; switch back at a pause.
        if self._probe_ok:
            return getattr(engine, "open_item", None) is None
        if now >= self._next_probe and (self._probe_task is None or self._probe_task.done()):
            self._next_probe = now + self.probe_s
            self._probe_task = asyncio.get_running_loop().create_task(self._probe())
        return False

    async def _probe(self) -> None:
        ok, why = await probe(self._url, self._key, PROBE_TIMEOUT_S)
        log.info("engine.probe ok=%s detail=%r", ok, why)
        self._probe_ok = ok

    def _recorder(self, name: str, emit: Emit) -> Emit:
        """Remember which engine produced each line (the chain is linked before this)."""

        def recorded(event: TranscriptEvent) -> None:
            self._engine_of.setdefault(event.item_id, name)
            emit(event)

        return recorded

    def _give_up_rescues(self, emit: Emit) -> None:
        """Local transcriptions still running at the end: failed, and their audio stored as
        a gap with the reason, so the session shows what is missing."""
        sink = self._gap_sink
        for fut, (item, start_ms, end_ms) in self._rescued.items():
            if fut.done():
                continue
            self._given_up.add(item)
            reason = (f"local fallback did not finish within {SWITCH_DRAIN_S:.0f} s "
                      "of the end (openai unreachable)")
            log.error("engine.rescue_unfinished item=%s start_ms=%d end_ms=%d",
                      item, start_ms, end_ms)
            emit(ItemFailed(item, reason))
            if sink is not None:
                sink(Gap(start_ms, end_ms, reason))

    def _rescue(self, entries: list[Any], emit: Emit) -> None:
        """Transcribe locally what the OpenAI engine had not got text for, keeping the ids."""
        loop = asyncio.get_running_loop()
        for entry in entries:
            if not entry.pcm:
                continue
            samples = pcm16_to_float(entry.pcm)
            offset = entry.start_ms
            item = entry.item_id

            def work(s: np.ndarray = samples, o: int = offset) -> Final:
                import soxr

                return self.decode(soxr.resample(s, SAMPLE_RATE, 16_000), o)

            fut = loop.run_in_executor(None, work)

            def done(f: asyncio.Future[Any], item: str = item) -> None:
                self._engine_of[item] = "local"
                if f.cancelled() or item in self._given_up:
                    return
                if f.exception() is not None:
                    emit(ItemFailed(item, f"local fallback failed: {f.exception()}"))
                    return
                decoded = f.result()
                # A multilingual model auto-detecting says which language it heard.
                emit(ItemCompleted(item, decoded.text, decoded.words,
                                   decoded.language or self.language))

            fut.add_done_callback(done)
            self._rescues.append(fut)
            end_ms = offset + len(samples) * 1000 // SAMPLE_RATE
            self._rescued[fut] = (item, offset, end_ms)
        if entries:
            log.warning("engine.rescued items=%d by=local", len(entries))

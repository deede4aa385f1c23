"""Session lifetimes and rotation in the pure protocol cores: no reconnect storm, whatever the
service advertises and whatever the clocks say; no audio lost or duplicated on the way.

The transcription core is driven by a simulated service (pure Python, simulated time): it
answers every commit after a delay with a transcript that names the exact audio it received
(first sample, count, contiguity: the PCM encodes each sample's stream position), expires
sessions at their real lifetime (``session_expired``, then the close), and drops every open
connection at the drawn times. Hypothesis draws the advertised lifetime, the clock skew, the
drop pattern, the speech pattern and whether the upgrade carried an HTTP ``Date``.
"""

from __future__ import annotations

import base64
import json
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from captiond.events import ItemCommitted, ItemCompleted, ItemFailed
from captiond.realtime.protocol import SAMPLE_RATE, Output, TranscriptionProtocol
from captiond.realtime.session import (
    DEFAULT_LIFETIME_S,
    MAX_LEAD_FRACTION,
    MIN_ROTATE_AGE_S,
    MIN_TRUSTED_LIFETIME_S,
    SessionClock,
    judge_lifetime,
    rotation_period,
)
from captiond.realtime.translate import TranslateSettings, TranslationProtocol

DT = 0.2  # simulated step (s)
BLOCK = int(SAMPLE_RATE * DT)
EPOCH = 1_900_000_000.0  # the server's clock at simulated time 0 (plus the skew)
WRAP = 30_000  # PCM sample value = stream position modulo this
YEAR_S = 365 * 86_400.0

LIFETIMES = [-3600.0, -1.0, 1.0, 3.0, 25.0, 90.0, 3600.0, YEAR_S]


def _pcm(start: int, n: int) -> bytes:
    return (np.arange(start, start + n, dtype=np.int64) % WRAP).astype("<i2").tobytes()


@dataclass
class _ServerConn:
    handle: int
    expires_sim: float | None  # simulated time the service ends the session (None: never)
    buffer: list[np.ndarray] = field(default_factory=list)
    due: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    items: int = 0


@dataclass
class _Sim:
    lifetime: float
    skew: float
    date: bool
    seed: int
    proto: TranscriptionProtocol
    conns: dict[int, _ServerConn] = field(default_factory=dict)
    opened: int = 0
    drops: int = 0
    expiries: int = 0
    events: list[Any] = field(default_factory=list)
    rng: random.Random = field(default_factory=random.Random)

    def server_wall(self, t: float) -> float:
        return EPOCH + self.skew + t

    def apply(self, out: Output, t: float) -> None:
        self.events += out.events
        for handle, event in out.send:
            conn = self.conns.get(handle)
            if conn is not None:
                self.on_client(conn, event, t)
        for handle, _code in out.close:
            if self.conns.pop(handle, None) is not None:
                self.apply(self.proto.connection_lost(handle, t), t)

    def on_client(self, conn: _ServerConn, event: dict[str, Any], t: float) -> None:
        kind = event["type"]
        if kind == "session.update":
            conn.due.append((t + DT, {"type": "session.updated", "session": {}}))
        elif kind == "input_audio_buffer.append":
            conn.buffer.append(np.frombuffer(base64.b64decode(event["audio"]), dtype="<i2"))
        elif kind == "input_audio_buffer.clear":
            conn.buffer.clear()
        elif kind == "input_audio_buffer.commit":
            audio = np.concatenate(conn.buffer) if conn.buffer else np.zeros(0, dtype="<i2")
            conn.buffer.clear()
            assert len(audio) >= SAMPLE_RATE // 10, "commit of less than 100 ms"
            steps = np.diff(audio.astype(np.int64)) % WRAP
            contiguous = bool(np.all(steps == 1))
            conn.items += 1
            sid = f"s{conn.handle}_{conn.items}"
            text = f"{int(audio[0])}:{len(audio)}:{contiguous}"
            conn.due.append((t + 0.1, {"type": "input_audio_buffer.committed", "item_id": sid,
                                       "previous_item_id": None}))
            conn.due.append((t + self.rng.uniform(0.3, 1.0), {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": sid, "content_index": 0, "transcript": text}))

    def open(self, t: float) -> None:
        handle, out = self.proto.connection_opened(t, self.server_wall(t) if self.date else None)
        self.opened += 1
        expires_sim = t + self.lifetime if 0 < self.lifetime < YEAR_S else None
        conn = _ServerConn(handle, expires_sim)
        self.conns[handle] = conn
        conn.due.append((t + DT / 2, {"type": "session.created", "session": {
            "id": f"sess{handle}", "expires_at": int(self.server_wall(t) + self.lifetime)}}))
        self.apply(out, t)

    def step_server(self, t: float) -> None:
        for conn in list(self.conns.values()):
            if conn.expires_sim is not None and t >= conn.expires_sim:
                self.expiries += 1
                self.apply(self.proto.receive(conn.handle, json.dumps({
                    "type": "error", "error": {"type": "invalid_request_error",
                                               "code": "session_expired", "message": "x"}}), t), t)
                if self.conns.pop(conn.handle, None) is not None:
                    self.apply(self.proto.connection_lost(conn.handle, t), t)
                continue
            ready = sorted((d for d in conn.due if d[0] <= t), key=lambda d: d[0])
            conn.due = [d for d in conn.due if d[0] > t]
            for _, msg in ready:
                if conn.handle not in self.conns:
                    break
                self.apply(self.proto.receive(conn.handle, json.dumps(msg), t), t)

    def drop_all(self, t: float) -> None:
        if self.conns:
            self.drops += 1
        for handle in list(self.conns):
            self.conns.pop(handle)
            self.apply(self.proto.connection_lost(handle, t), t)


def _speech(seed: int, steps: int) -> list[bool]:
    """Per step: speaking or not; utterances of 1-8 s, pauses of 0.2-1.6 s."""
    rng, out, talking = random.Random(seed), [], False
    while len(out) < steps:
        n = rng.randint(5, 40) if talking else rng.randint(1, 8)
        out += [talking] * n
        talking = not talking
    return out[:steps]


def _simulate(lifetime: float, skew: float, date: bool, drops: list[float], minutes: float,
              seed: int, rotate_before_s: float = 300.0) -> _Sim:
    proto = TranscriptionProtocol(rotate_before_s=rotate_before_s, item_timeout_s=30.0)
    sim = _Sim(lifetime, skew, date, seed, proto, rng=random.Random(seed))
    steps = int(minutes * 60 / DT)
    speech = _speech(seed, steps)
    drop_steps = {int(d * steps) for d in drops}
    pos = 0
    t = 0.0
    for i in range(steps + int(120 / DT)):
        t = i * DT
        sim.step_server(t)
        if i in drop_steps:
            sim.drop_all(t)
        sim.apply(proto.tick(t), t)
        if proto.wants_connection(t):
            sim.open(t)
        if i < steps:
            if speech[i]:
                sim.apply(proto.audio(_pcm(pos, BLOCK), pos, t), t)
                if i + 1 == steps or not speech[i + 1]:
                    sim.apply(proto.commit(t), t)
            else:
                sim.apply(proto.idle(t), t)
            pos += BLOCK
        elif proto.unsettled_count() == 0:
            break
    sim.speech_samples = sum(speech) * BLOCK  # type: ignore[attr-defined]
    sim.t_end = t  # type: ignore[attr-defined]
    return sim


def _least_period(lifetime: float, date: bool, rotate_before_s: float) -> float:
    """The shortest time between two connections the cores may choose (drops aside): the
    rotation period of the lifetime judged from the advertisement, or -- once the service has
    expired a session -- of the lifetime seen (less a step of simulated time), or the service's
    own cap."""
    # expires_at is whole seconds: the advertised lifetime reads up to 1 s short.
    judged, _ = judge_lifetime(EPOCH + lifetime, EPOCH if date else None)
    short, _ = judge_lifetime(EPOCH + lifetime - 1, EPOCH if date else None)
    period = min(rotation_period(judged, rotate_before_s), rotation_period(short, rotate_before_s))
    judged = min(judged, short)
    if 0 < lifetime < YEAR_S:  # the service itself ends sessions this often
        seen = min(max(lifetime - DT, MIN_TRUSTED_LIFETIME_S), judged)
        period = min(period, lifetime, rotation_period(seen, rotate_before_s))
    assert period >= min(lifetime if lifetime > 0 else judged, judged) * (1 - MAX_LEAD_FRACTION) \
        - DT or period >= MIN_ROTATE_AGE_S
    return period


def _check_audio(sim: _Sim) -> None:
    committed = {e.item_id: e for e in sim.events if isinstance(e, ItemCommitted)}
    completed = [e for e in sim.events if isinstance(e, ItemCompleted)]
    assert not [e for e in sim.events if isinstance(e, ItemFailed)]
    ids = [e.item_id for e in completed]
    assert len(ids) == len(set(ids)), "an utterance completed twice"
    assert set(ids) == set(committed), "an utterance never completed"
    total = 0
    for e in completed:
        first, n, contiguous = e.text.split(":")
        c = committed[e.item_id]
        start = c.audio_start_ms * SAMPLE_RATE // 1000
        end = c.audio_end_ms * SAMPLE_RATE // 1000
        # The service transcribed exactly this utterance's audio: its first sample, its length,
        # no hole and no repeat inside.
        assert contiguous == "True"
        assert int(first) == start % WRAP and int(n) == end - start
        total += int(n)
    assert total == sim.speech_samples  # type: ignore[attr-defined]
    c = sim.proto.counters
    assert c["samples_sent"] == sim.speech_samples  # type: ignore[attr-defined]
    assert c["samples_dropped"] == 0


@settings(max_examples=20, deadline=None)
@given(
    lifetime=st.sampled_from(LIFETIMES),
    skew=st.floats(min_value=-7200, max_value=7200),
    date=st.booleans(),
    drops=st.lists(st.floats(min_value=0.0, max_value=0.99), max_size=6),
    minutes=st.floats(min_value=0.5, max_value=3.0),
    seed=st.integers(0, 10_000),
    rotate_before_s=st.sampled_from([0.001, 5.0, 300.0, 86_400.0]),
)
def test_connections_stay_bounded_and_no_audio_is_lost_or_duplicated(
    lifetime: float, skew: float, date: bool, drops: list[float], minutes: float, seed: int,
    rotate_before_s: float,
) -> None:
    """For any advertised lifetime (past, 1 s ... a year), clock skew within 2 h, drop pattern
    and rotate_before_s: connections <= 1 + drops + elapsed / period + 1, where period is the
    least age a session is replaced at (or the service's own cap, if shorter); every utterance
    is transcribed exactly once from exactly its own audio."""
    sim = _simulate(lifetime, skew, date, drops, minutes, seed, rotate_before_s)
    _check_audio(sim)
    elapsed = sim.t_end  # type: ignore[attr-defined]
    period = _least_period(lifetime, date, rotate_before_s)
    assert sim.opened <= 1 + sim.drops + elapsed / period + 1, (sim.opened, sim.drops, period)


def test_the_storm_scenarios_open_a_handful_of_connections() -> None:
    """The two field faults over a 5-minute meeting: 25 s advertised sessions (rotate_before_s
    300 s), and a client clock two hours fast with and without an HTTP Date."""
    short = _simulate(25.0, 0.0, True, [], 5.0, 1)
    _check_audio(short)
    # One replacement per judged period (25 s * 0.4 = 10 s), never one per tick.
    assert short.opened <= 1 + (5 * 60 + 120) / 10 + 1
    for date in (True, False):
        skewed = _simulate(3600.0, -7200.0, date, [], 5.0, 2)
        _check_audio(skewed)
        assert skewed.opened == 1 and skewed.expiries == 0


def test_lifetime_judgement() -> None:
    """expires_at is read against the server's time only; absurd values are distrusted and
    long ones clamped; a session is never replaced before the minimum age."""
    assert judge_lifetime(1_000 + 3600, 1_000) == (3600.0, True)
    assert judge_lifetime(1_000 + 25, 1_000) == (25.0, True)
    assert judge_lifetime(1_000 - 3600, 1_000) == (DEFAULT_LIFETIME_S, False)  # in the past
    assert judge_lifetime(1_000 + 1, 1_000) == (DEFAULT_LIFETIME_S, False)  # absurdly short
    assert judge_lifetime(1_000 + YEAR_S, 1_000) == (3600.0, True)  # clamped to the cap
    assert judge_lifetime(1_000 + 60, None) == (DEFAULT_LIFETIME_S, False)  # no server time
    assert judge_lifetime(float("nan"), 1_000) == (DEFAULT_LIFETIME_S, False)
    assert judge_lifetime(True, 1_000) == (DEFAULT_LIFETIME_S, False)
    assert judge_lifetime(1_000 + 60, None, learned_s=25.0) == (25.0, False)
    clock = SessionClock.start(100.0, 1_000 + 2.5, 1_000, rotate_before_s=1e9)
    assert not clock.rotate_due(100.0 + MIN_ROTATE_AGE_S - 0.01)
    assert clock.rotate_due(100.0 + MIN_ROTATE_AGE_S)
    clock = SessionClock.start(0.0, 1_000 + 3600, 1_000, rotate_before_s=300)
    assert not clock.rotate_due(3299.9) and clock.rotate_due(3300.0)
    assert not clock.force_due(3300.0) and clock.force_due(3597.0)
    for life in (2.5, 3.0, 25.0, 600.0, 3600.0):
        for before in (0.001, 5.0, 300.0, 1e9):
            # Never a small share of the lifetime: replacing sessions cannot storm.
            assert rotation_period(life, before) >= max(life * (1 - MAX_LEAD_FRACTION),
                                                        MIN_ROTATE_AGE_S) - 1e-9


def _translation_sim(lifetime: float, date: bool, minutes: float, drop_every_s: float | None,
                     rotate_before_s: float = 300.0) -> tuple[int, int, TranslationProtocol]:
    """The translation core under the same service model: (connections, drops, protocol)."""
    p = TranslationProtocol(TranslateSettings("es"), item_prefix="t-", buffer_bytes=10**9,
                            resend_bytes=48_000 * 10, rotate_before_s=rotate_before_s)
    alive: dict[int, float | None] = {}
    opened = drops = 0
    for i in range(int(minutes * 60 / DT)):
        t = i * DT
        for h, exp in list(alive.items()):
            if exp is not None and t >= exp:
                p.receive(h, json.dumps({"type": "error", "error": {"code": "session_expired"}}),
                          t, t)
                del alive[h]
                p.connection_lost(h, t)
        if drop_every_s and i and i % int(drop_every_s / DT) == 0 and alive:
            drops += 1
            for h in list(alive):
                del alive[h]
                p.connection_lost(h, t)
        if p.wants_connection(t):
            h = p.connection_opened(t, EPOCH + t if date else None)
            opened += 1
            alive[h] = t + lifetime if 0 < lifetime < YEAR_S else None
            out = p.receive(h, json.dumps({"type": "session.created", "session": {
                "expires_at": int(EPOCH + t + lifetime)}}), t, t - 7200)
            for hh, _code in out.close:
                alive.pop(hh, None)
                p.connection_lost(hh, t)
            for hh, ev in out.send:
                if ev["type"] == "session.close" and hh in alive:
                    del alive[hh]
                    p.connection_lost(hh, t)
        p.audio(_pcm(i * BLOCK, BLOCK), i * BLOCK, t)
    return opened, drops, p


@settings(max_examples=40, deadline=None)
@given(lifetime=st.sampled_from(LIFETIMES), date=st.booleans(),
       minutes=st.floats(min_value=0.5, max_value=5.0),
       drop_every_s=st.one_of(st.none(), st.floats(min_value=2.0, max_value=60.0)),
       rotate_before_s=st.sampled_from([0.001, 5.0, 300.0, 86_400.0]))
def test_translation_connections_stay_bounded(lifetime: float, date: bool, minutes: float,
                                              drop_every_s: float | None,
                                              rotate_before_s: float) -> None:
    """The translation core under any advertised lifetime and drop pattern opens at most
    1 + drops + elapsed / period + 1 connections."""
    opened, drops, _ = _translation_sim(lifetime, date, minutes, drop_every_s, rotate_before_s)
    period = _least_period(lifetime, date, rotate_before_s)
    assert opened <= 1 + drops + minutes * 60 / period + 1, (opened, drops, period)

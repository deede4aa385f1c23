"""When to replace a realtime service session.  [pure: no I/O, no clock]

Both OpenAI protocols (:mod:`captiond.realtime.protocol` for transcription,
:mod:`captiond.realtime.translate` for translation) ask the same questions about a session:
is it time to open a standby, must the standby take over now even without a pause, is the
session too young to be replaced at all. The answers live here, and every one takes ``now``
(the caller's monotonic clock) as an argument.

Why not compare ``expires_at`` with the wall clock: ``expires_at`` is an epoch time on the
*server's* clock. A client clock two hours fast reads every fresh session as long expired, a
client clock slow reads it as living for hours, and a service (or a proxy, or a region) that
advertises short sessions makes "rotate ``rotate_before_s`` before expiry" true at the moment
a session is created. Rotating on such a reading opens a connection, which rotates at once,
and so on: thousands of connections a minute. So:

* ``expires_at`` is used only as an advertised *relative* lifetime: ``expires_at`` minus a
  server time taken at the same moment -- the session's own ``created_at`` when it has one,
  else the upgrade response's HTTP ``Date`` header read by the driver.
* Without a server time there is only the client's wall clock, whose skew is unknown (a
  clock 59 minutes fast turns a 60-minute session into a 1-minute one), so the advertised
  value is not used at all: the session is taken to live :data:`DEFAULT_LIFETIME_S` (the
  documented cap) or, once a session has ended with ``session_expired``, as long as that
  one was seen to live (:meth:`SessionClock.start`'s ``learned_s``). The server's
  ``session_expired`` is the backstop; the protocols lose no audio to it.
* A lifetime that is not a finite number, not positive, or shorter than
  :data:`MIN_TRUSTED_LIFETIME_S` is distrusted the same way. A lifetime above
  :data:`MAX_LIFETIME_S` is clamped to it.
* Age is measured on the local monotonic clock from when ``session.created`` arrived.
* The rotation lead is ``rotate_before_s``, but never more than :data:`MAX_LEAD_FRACTION` of
  the lifetime, and no session is replaced before :data:`MIN_ROTATE_AGE_S`. So a session is
  replaced at most once per ``max(lifetime * (1 - MAX_LEAD_FRACTION), MIN_ROTATE_AGE_S)``
  whatever the clocks and settings say: :func:`rotation_period`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: The documented session cap: no session is taken to live longer than this.
MAX_LIFETIME_S = 3600.0
#: Assumed when the advertised lifetime is unusable (missing, negative, absurdly short).
DEFAULT_LIFETIME_S = 3600.0
#: Shorter advertised lifetimes are distrusted (a skewed clock reads this way far more often
#: than a service means it; if it does, its session_expired ends the session anyway).
MIN_TRUSTED_LIFETIME_S = 2.0
#: The rotation lead never exceeds this share of the lifetime.
MAX_LEAD_FRACTION = 0.6
#: A session younger than this is never replaced on purpose.
MIN_ROTATE_AGE_S = 1.0
#: When this close to the end (or the whole lead, if shorter) and no pause came, the standby
#: takes over at once and the utterance in progress moves with it.
FORCE_SWITCH_S = 3.0


def judge_lifetime(expires_at: object, server_now: float | None,
                   learned_s: float | None = None) -> tuple[float, bool]:
    """``(lifetime_s, trusted)`` from an advertised ``expires_at`` and the *server's* time
    (epoch seconds; None when only the client's clock is known) at the moment the session was
    created. ``learned_s``: how long an earlier session was seen to live before the server
    expired it. Never raises."""
    fallback = DEFAULT_LIFETIME_S if learned_s is None else _clamp(learned_s)
    if server_now is None or isinstance(expires_at, bool) \
            or not isinstance(expires_at, (int, float)):
        return fallback, False
    life = float(expires_at) - server_now
    if not math.isfinite(life) or life < MIN_TRUSTED_LIFETIME_S:
        return fallback, False
    return min(_clamp(life), fallback), True


def _clamp(life: float) -> float:
    return min(max(life, MIN_TRUSTED_LIFETIME_S), MAX_LIFETIME_S)


def rotation_lead(lifetime_s: float, rotate_before_s: float) -> float:
    """How long before the judged end a standby is opened."""
    return max(0.0, min(rotate_before_s, lifetime_s * MAX_LEAD_FRACTION))


def rotation_period(lifetime_s: float, rotate_before_s: float) -> float:
    """The least age at which a session of this judged lifetime is replaced on purpose."""
    return max(lifetime_s - rotation_lead(lifetime_s, rotate_before_s), MIN_ROTATE_AGE_S)


@dataclass(frozen=True, slots=True)
class SessionClock:
    """One session's lifetime on the local monotonic clock."""

    created: float  # caller's monotonic time when session.created arrived
    lifetime_s: float
    trusted: bool
    rotate_before_s: float

    @classmethod
    def start(cls, now: float, expires_at: object, server_now: float | None,
              rotate_before_s: float, learned_s: float | None = None) -> SessionClock:
        life, trusted = judge_lifetime(expires_at, server_now, learned_s)
        return cls(now, life, trusted, max(0.0, rotate_before_s))

    def age(self, now: float) -> float:
        return now - self.created

    def remaining(self, now: float) -> float:
        return self.created + self.lifetime_s - now

    def rotate_due(self, now: float) -> bool:
        """Time to open a standby session."""
        return self.age(now) >= rotation_period(self.lifetime_s, self.rotate_before_s)

    def force_due(self, now: float) -> bool:
        """A ready standby must take over now, pause or not."""
        if not self.rotate_due(now):
            return False
        lead = rotation_lead(self.lifetime_s, self.rotate_before_s)
        return self.remaining(now) <= min(FORCE_SWITCH_S, lead)


class ServerClock:
    """The server's time as seen through the caller's monotonic clock: ``server_time`` (epoch
    seconds on the server's clock, from the upgrade's HTTP ``Date``; None when unknown) was
    read at monotonic ``now``."""

    __slots__ = ("offset",)

    def __init__(self, now: float, server_time: float | None) -> None:
        self.offset = None if server_time is None else server_time - now

    def at(self, now: float) -> float | None:
        return None if self.offset is None else now + self.offset

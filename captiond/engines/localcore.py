"""The local engine's decisions, apart from audio and threads.  [pure: no I/O, no clock]

:class:`LocalCore` is to the local engine what the protocol core is to the OpenAI engine. It
takes the front end's decisions (speech started, a pause, an utterance ended), the position of
each block, and the results of the decodes it asked for, each with ``now``; it returns
:class:`Out`: decode requests for the shell to run on the decoder thread, transcript events,
dropped utterances, decodes to stop, and a sentence's end for the front end. The shell
(:mod:`captiond.engines.local`) only slices audio, runs decodes and hands results back, so
every rule below is tested with a scripted decoder and no model (``tests/unit``).

One request type, :class:`DecodeRequest`: a span of audio, earlier text as context, forced
tokens (a line's text said before the span's new audio, and words partials agreed on), and
its kind. A final is a :class:`FinalDecode`: its first pass, a retry on the full window when
the fitted window's text would be dropped, *continuations* when the decoder stopped before
the audio's end (Whisper ends a window early and skips a sentence), and, for speech that
resumed right after a finished sentence, a first pass that is the *sequel* of the line before
(that line's audio and text forced first). Continuations and sequels are one mechanism: new
words for audio after words already given, joined by :func:`captiond.engines.join.join`, which
never emits a word whose audio is already covered.

A final is cut into lines at sentence ends (:func:`captiond.engines.join.lines`): each line is
an item of its own (``loc-7``, ``loc-7.1``, ...). Items are committed in transcript order: an
utterance's item is placed once the one before it has its final, so the lines a final is cut
into come before the next utterance's. Partials of an item not yet placed wait in the
reconciler and show the moment it is.

Partials: while someone speaks, the growing utterance is decoded every ``partial_interval_s``
(or :data:`PARTIAL_INTERVAL_SHARE` of its length, once longer), only when the decoder is idle.
Until a line has text they come every :data:`FIRST_TEXT_INTERVAL_S`, and the first text shows
when the decoder is sure of it or the VAD has heard speech for :data:`FIRST_TEXT_SURE_AFTER_S`.
Words that :data:`AGREE_PARTIALS` partials agree on are forced on later partials (local
agreement), made stable with ``stable_text``.

Early finals: a final decode starts at a :class:`~captiond.audio.segmenter.Pause`; if its text
is a finished sentence (:func:`ends_sentence`), :attr:`Out.sentence_end` tells the shell to end
the pause early (``vad.sentence_end_ms``). The shell waits for that verdict before the block
that could end the pause, so cuts never depend on the decoder's speed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from captiond.audio.segmenter import Params, Pause, SpeechStarted, UtteranceEnded
from captiond.engines import guards
from captiond.engines.join import before, join, lines, text_of
from captiond.events import (
    DroppedUtterance,
    ItemCommitted,
    ItemCompleted,
    ItemFailed,
    ItemPartial,
    TranscriptEvent,
    Word,
)

RATE = 16_000

#: Consecutive partials that must agree on a word before it is agreed.
AGREE_PARTIALS = 3
#: Nothing is agreed before the utterance is this long (first words decoded from a fraction of
#: a second of audio are often wrong in agreement).
STABLE_AFTER_S = 2.0
#: Agreed words at the end of a partial that are not yet committed.
HOLD_BACK_WORDS = 2
#: Partials of a long utterance come at most every this share of its length so far.
PARTIAL_INTERVAL_SHARE = 0.15
#: Until a line shows text, partials come this often ...
FIRST_TEXT_INTERVAL_S = 0.2
#: ... and its first text shows only when the decoder is as sure of it as Whisper's own
#: threshold for speech, or once the VAD has heard speech for this long.
FIRST_TEXT_SURE_AFTER_S = 0.7
#: A final ends a sentence when its text ends with one of these ("..." trails off) ...
SENTENCE_ENDS = (".", "?", "!", "\u3002", "\uff1f", "\uff01")
#: ... and the decoder gave its last word at least this probability.
SENTENCE_END_MIN_PROB = 0.5
#: An utterance whose speech starts less than ``vad.min_silence_ms`` after the last one's goes
#: on from it (its final is that line's sequel) if that one is at most this long.
SEQUEL_LEAD_MAX_S = 10.0
#: A final whose words end this long before its audio does is continued from there.
CONTINUE_MIN_S = 1.0
MAX_CONTINUATIONS = 3
#: Earlier text given to a continuation as context (tokens).
PROMPT_TOKENS = 100
#: Audio kept before the open utterance (for the pre-speech pad and onset walk-back).
KEEP_BEFORE_S = 2.0


class Tokens(Protocol):
    """The tokenizer, as far as the core needs it."""

    def join(self, prefix: list[int], tokens: list[int]) -> str: ...

    def starts_word(self, token: int) -> bool: ...

    def encode(self, text: str) -> list[int]: ...


@dataclass(frozen=True, slots=True)
class DecodeRequest:
    """Decode the audio from ``start`` to ``end`` (16 kHz stream positions)."""

    id: int
    kind: str  # "partial" or "final"
    item: str
    start: int
    end: int
    #: A line's text tokens, forced first as a finished segment for the audio up to
    #: ``said_end`` (a sequel); their words are not returned.
    said: tuple[int, ...] = ()
    said_end: int = 0
    #: Tokens forced after ``said`` (words partials agreed on); returned with their words.
    prefix: tuple[int, ...] = ()
    #: Earlier text given as the decoder's prompt (a continuation's context).
    context: tuple[int, ...] = ()
    #: Decode on the full 30 s window (else a window fitted to the audio).
    full_window: bool = False
    #: Decode in this language (None: ``engine.language`` or detected).
    language: str | None = None
    #: The decode may be stopped after the encoder (a speculative final).
    stoppable: bool = False
    #: Align words (finals).
    words: bool = True


@dataclass(slots=True)
class Pass:
    """What one decode gave: new text tokens (after the forced ones), the text of the prefix
    and them, their words (stream ms; the prefix's first, ``forced_words`` of them)."""

    tokens: list[int] = field(default_factory=list)
    text: str = ""
    new_text: str = ""  # the text of ``tokens`` alone
    words: tuple[Word, ...] = ()
    forced_words: int = 0
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    full_window: bool = False
    language: str | None = None
    stopped: bool = False
    seconds: float = 0.0


@dataclass(slots=True)
class Final:
    """An utterance's final: its text and words, or why it has none, and what was cut."""

    text: str = ""
    words: tuple[Word, ...] = ()
    tokens: list[int] = field(default_factory=list)  # said + own text tokens (a sequel's lead)
    language: str | None = None
    dropped: str | None = None
    dropped_text: str = ""
    #: Leading words that were promised as stable text (the first line holds them all).
    promised_words: int = 0
    #: Pieces decoded and not kept: (start ms, reason, text).
    trimmed: list[tuple[int, str, str]] = field(default_factory=list)


def ends_sentence(text: str, words: Sequence[Word]) -> bool:
    """Whether a final's text is a finished sentence: it ends with a full stop, question or
    exclamation mark, and the decoder was sure of its last word."""
    text = text.rstrip()
    if not text.endswith(SENTENCE_ENDS) or text.endswith(".."):
        return False
    return not words or words[-1].probability >= SENTENCE_END_MIN_PROB


def _ms(position: int) -> int:
    return position * 1000 // RATE


class FinalDecode:
    """One utterance's final, pass by pass (see the module): :meth:`first` asks for the first
    decode, :meth:`feed` takes each result and asks for the next, or None when done
    (:attr:`result`). ``lead``: (start, final) of the line this one is the sequel of;
    ``heard``: where the VAD first heard its speech.

    After the first pass: a retry on the full window if its text would be dropped; a *head*
    if its words begin :data:`CONTINUE_MIN_S` or more after the speech does (the decoder
    skipped the start: the audio before them is decoded and its words put first); then
    continuations while the words end that long before the audio does."""

    def __init__(
        self, tokens: Tokens, item: str, start: int, end: int, *, speech_ratio: float = 1.0,
        prefix: Sequence[int] = (), lead: tuple[int, Final] | None = None, fit: bool = True,
        stoppable: bool = False, heard: int | None = None,
    ) -> None:
        self.tokens = tokens
        self.item, self.start, self.end = item, start, end
        self.speech_ratio = speech_ratio
        self.prefix = tuple(prefix)
        self.lead = lead
        self.fit = fit
        self.stoppable = stoppable
        self.result = Final()
        self.continuations = 0
        self.done = False
        self._covered: list[Word] = list(lead[1].words) if lead else []
        self._context: list[int] = list(lead[1].tokens) if lead else []
        self._pending: DecodeRequest | None = None
        self._joined = False  # words were left out or appended: text and tokens are the words'
        self.heard = max(start, heard or start)  # where the VAD first heard speech
        self._stage = "first"  # "first", "head" (audio before the first words), "rest"

    def first(self) -> DecodeRequest:
        if self.lead is not None:
            req = DecodeRequest(0, "final", self.item, self.lead[0], self.end,
                                said=tuple(self.lead[1].tokens), said_end=self.start,
                                prefix=self.prefix, stoppable=self.stoppable)
        else:
            req = DecodeRequest(0, "final", self.item, self.start, self.end, prefix=self.prefix,
                                stoppable=self.stoppable)
        self._pending = req
        return req

    def feed(self, p: Pass) -> DecodeRequest | None:
        """Take the result of the last request; the next request, or None when done."""
        req = self._pending
        assert req is not None, "a result for no request"
        res = self.result
        if self._stage == "head":
            return self._head_done(p)
        first = self._stage == "first"
        forced = bool(req.said or req.prefix)
        reason = guards.judge(
            p.new_text, no_speech_prob=p.no_speech_prob, avg_logprob=p.avg_logprob,
            speech_ratio=self.speech_ratio if first else 1.0, no_speech_test=not forced,
        )
        if first and reason and self.fit and not req.full_window and not p.full_window:
            # Text is never dropped on the fitted window's word alone.
            return self._ask(replace(req, full_window=True))
        if first:
            res.language = p.language
            res.promised_words = p.forced_words if req.prefix else 0
        if reason:
            if first:
                res.dropped, res.dropped_text = reason, p.new_text
                if req.prefix:  # the agreed words stay; what followed was judged not speech
                    res.words = p.words[: p.forced_words]
                    res.text = p.text if not p.words else text_of(res.words)
                    res.tokens = list(req.prefix)
            elif reason != "empty":
                res.trimmed.append((_ms(req.start), reason, p.new_text))
            return self._finish()
        if not p.words:  # no timings: nothing to join by; the text as decoded
            res.text = " ".join(t for t in (res.text, p.text.strip()) if t)
            res.tokens = [*res.tokens, *req.prefix, *p.tokens]
            return self._finish()
        kept, repeated = join(self._covered, p.words)
        if repeated:
            res.trimmed.append((repeated[0].start_ms, "overlap", text_of(repeated)))
        if not kept:
            return self._finish()
        if repeated or res.words:
            self._joined = True
            res.words = (*res.words, *kept)
            res.text = text_of(res.words)
        else:
            res.words, res.text = tuple(kept), p.text.strip()
        res.tokens = [*res.tokens, *req.prefix, *p.tokens]
        self._covered.extend(kept)
        self._context.extend([*req.prefix, *p.tokens])
        if (first and not forced and self.lead is None
                and kept[0].start_ms - _ms(self.heard) >= CONTINUE_MIN_S * 1000):
            # The decoder's words begin well after the speech does (it skipped the start):
            # decode the audio before them.
            # Through the first word: a word cut off at the edge is misheard ("... or as"),
            # and the join leaves the first word, decoded again, out.
            self._stage = "head"
            return self._ask(DecodeRequest(
                0, "final", self.item, self.start, min(self.end, kept[0].end_ms * RATE // 1000),
                language=res.language, stoppable=self.stoppable,
            ))
        return self._rest()

    def _head_done(self, p: Pass) -> DecodeRequest | None:
        """The audio before the first words is decoded: its words go before them."""
        req = self._pending
        assert req is not None
        res = self.result
        self._stage = "rest"
        reason = guards.judge(p.new_text, no_speech_prob=p.no_speech_prob, avg_logprob=p.avg_logprob)
        if reason:
            if reason != "empty":
                res.trimmed.append((_ms(req.start), reason, p.new_text))
            return self._rest()
        head = before(p.words, res.words)
        if head:
            self._joined = True
            res.words = (*head, *res.words)
            res.text = text_of(res.words)
            self._covered[:0] = head
        return self._rest()

    def _rest(self) -> DecodeRequest | None:
        """Continue after the last words if they end well before the audio does."""
        self._stage = "rest"
        res = self.result
        covered_to = self._covered[-1].end_ms
        if (self.continuations < MAX_CONTINUATIONS and covered_to >= _ms(self.start)
                and _ms(self.end) - covered_to >= CONTINUE_MIN_S * 1000):
            # The decoder's words end well before the audio does: decode the rest.
            self.continuations += 1
            return self._ask(DecodeRequest(
                0, "final", self.item, covered_to * RATE // 1000, self.end,
                context=tuple(self._context[-PROMPT_TOKENS:]), language=res.language,
                stoppable=self.stoppable,
            ))
        return self._finish()

    def _ask(self, req: DecodeRequest) -> DecodeRequest:
        self._pending = req
        return req

    def _finish(self) -> DecodeRequest | None:
        """Done: tidy the result (its tail trimmed; the tokens of the words kept). None."""
        self._pending = None
        self.done = True
        res = self.result
        if res.words and not res.dropped:
            kept, cut = guards.trim_tail(res.words)
            for reason, words in cut:
                res.trimmed.append((words[0].start_ms, reason, text_of(words)))
            if cut:
                self._joined = True
                res.words, res.text = tuple(kept), text_of(kept)
                if not kept:
                    res.dropped, res.dropped_text = cut[0][0], text_of(cut[0][1])
        if not res.text and not res.dropped:
            res.dropped = res.trimmed[0][1] if res.trimmed else "empty"
            res.dropped_text = res.trimmed[0][2] if res.trimmed else ""
        if self._joined:
            # What a later sequel is given as said: the tokens of the words kept.
            res.tokens = self.tokens.encode(" " + res.text) if res.text else []
        elif not res.text:
            res.tokens = []
        return None


# -- the streaming core ------------------------------------------------------------------------


@dataclass(slots=True)
class Out:
    """What the shell must do after a call into the core."""

    requests: list[DecodeRequest] = field(default_factory=list)
    events: list[TranscriptEvent] = field(default_factory=list)
    dropped: list[DroppedUtterance] = field(default_factory=list)
    stop: list[int] = field(default_factory=list)  # request ids no longer needed
    #: Keep the audio from ``start`` to ``end`` of a cut utterance for its final's decodes.
    keep: list[tuple[str, int, int]] = field(default_factory=list)
    #: The text before the announced pause ending here is a finished sentence.
    sentence_end: int | None = None
    #: Utterances whose final is done (their kept audio can go).
    released: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Utterance:
    item: str
    start: int
    heard: int
    prev: _Utterance | None
    lead: _Utterance | None = None
    end: int | None = None
    speech_ratio: float = 1.0
    final: FinalDecode | None = None
    result: Final | None = None
    failed: str | None = None
    prefix: tuple[int, ...] = ()  # the promised (stable) tokens at its cut
    placed: bool = False
    prev_id: str | None = None  # the id of the line before its first (once placed)
    emitted: bool = False  # its lines are out
    last_id: str = ""  # the id of its last line (what the next item follows)
    next: _Utterance | None = None
    cut_at: float = 0.0


@dataclass(slots=True)
class _Speculative:
    utt: _Utterance
    start: int
    end: int
    final: FinalDecode
    request: int  # the id of its outstanding decode (0: none)


class LocalCore:
    """See the module. Positions are 16 kHz stream samples; ``now`` is seconds on any clock."""

    def __init__(
        self, tokens: Tokens, params: Params, *, partial_interval_s: float = 0.5,
        partials: bool = True, stable_text: bool = False, word_timestamps: bool = True,
        fit: bool = True, id_prefix: str = "loc",
    ) -> None:
        self.tokens = tokens
        self.params = params
        self.partial_interval_s = partial_interval_s
        self.partials = partials and partial_interval_s > 0
        self.stable_text = stable_text
        self.word_timestamps = word_timestamps
        self.fit = fit
        self.id_prefix = id_prefix
        self._count = 0
        self._ids = 0
        self._open: _Utterance | None = None
        self._last: _Utterance | None = None  # the last utterance opened
        self._last_cut: _Utterance | None = None
        self._open_text = ""
        self._agreed: list[int] = []
        self._promised = 0
        self._stable_text = ""
        self._tail: list[int] = []
        self._earlier: list[list[int]] = []
        self._last_partial_at = 0
        self._partial: DecodeRequest | None = None
        self._speculative: _Speculative | None = None
        #: Outstanding final decodes: request id -> (utterance, its final decode).
        self._finals: dict[int, tuple[_Utterance, FinalDecode]] = {}
        self._unresolved: list[_Utterance] = []  # cut, final not done, in order of cut
        self._waiting_lead: list[_Utterance] = []  # sequels waiting for their lead's final
        self._last_words: tuple[Word, ...] = ()  # the words of the last line emitted
        # Figures for status and benchmarks.
        self.partials_emitted = 0
        self.partials_skipped = 0
        self.finals_emitted = 0
        self.speculative_used = 0
        self.speculative_wasted = 0
        self.last_final_lag_s = 0.0

    # -- what the shell asks ---------------------------------------------------------------

    @property
    def pending_finals(self) -> int:
        """Utterances cut whose final is not done yet (the shell's back-pressure)."""
        return len(self._unresolved)

    @property
    def open_item(self) -> str | None:
        return self._open.item if self._open is not None else None

    def verdict_request(self) -> int | None:
        """The outstanding decode of the early final whose verdict the next block may need."""
        spec = self._speculative
        return spec.request if spec is not None and spec.request else None

    def keep_from(self, end: int) -> int:
        """Where the shell may trim its ring, with the stream at ``end``."""
        if self._open is not None:
            first = self._open.lead.start if self._open.lead is not None else self._open.start
            return first - RATE // 10
        keep = end - int(KEEP_BEFORE_S * RATE)
        if self._goes_on(end) and self._last_cut is not None:
            keep = min(keep, self._last_cut.start)  # speech heard now would go on from it
        return keep

    def _goes_on(self, heard: int) -> bool:
        """Whether speech the VAD hears at ``heard`` goes on from the last line cut: it resumes
        sooner than ``vad.min_silence_ms`` after that line's speech ended (a pause that long
        would not have cut it; a finished sentence did), and that line is short enough."""
        last, p = self._last_cut, self.params
        return (last is not None and last.end is not None
                and heard - last.end + p.samples(p.tail_ms) < p.samples(p.min_silence_ms)
                and last.end - last.start <= SEQUEL_LEAD_MAX_S * RATE)

    # -- inputs ----------------------------------------------------------------------------

    def decisions(self, decisions: Iterable[object], now: float) -> Out:
        out = Out()
        for d in decisions:
            if isinstance(d, SpeechStarted):
                self._started(d, out)
            elif isinstance(d, Pause):
                self._paused(d, out)
            elif isinstance(d, UtteranceEnded):
                self._ended(d, now, out)
        return out

    def block(self, end: int, in_pause: bool) -> Out:
        """The stream reached ``end``; ``in_pause``: its last window was silence."""
        out = Out()
        spec = self._speculative
        if spec is not None and not in_pause:
            self._drop_speculative(out)
        if self._open is not None and not in_pause:
            self._maybe_partial(end, out)
        return out

    def decoded(self, request: DecodeRequest, result: Pass | BaseException, now: float) -> Out:
        """The result of a request (a :class:`Pass`, or the exception the decode raised)."""
        out = Out()
        if request.kind == "partial":
            self._partial_done(request, result, out)
            return out
        spec = self._speculative
        if spec is not None and spec.request == request.id:
            spec.request = 0
            self._feed_speculative(spec, request, result, out)
            return out
        entry = self._finals.pop(request.id, None)
        if entry is None:
            return out  # a stopped speculative decode
        utt, fd = entry
        self._feed_final(utt, fd, result, now, out)
        return out

    # -- speech starts, pauses, ends ---------------------------------------------------------

    def _started(self, d: SpeechStarted, out: Out) -> None:
        self._count += 1
        item = f"{self.id_prefix}-{self._count}"
        utt = _Utterance(item, d.start, d.heard, self._last)
        if self._last is not None:
            self._last.next = utt
        self._last = utt
        if self._goes_on(d.heard):
            utt.lead = self._last_cut
        self._open, self._open_text = utt, ""
        self._agreed, self._promised, self._stable_text = [], 0, ""
        self._tail, self._earlier = [], []
        self._last_partial_at = d.start
        self._place(utt, out)

    def _paused(self, d: Pause, out: Out) -> None:
        utt = self._open
        if utt is None:
            return
        self._drop_speculative(out)
        if utt.lead is not None and utt.lead.result is None and utt.lead.failed is None:
            return  # its final needs the lead's text first
        fd = self._final_for(utt, d.start, d.end, d.speech_ratio, self._promised_tokens(),
                             stoppable=True)
        req = self._request(fd.first(), out)
        self._speculative = _Speculative(utt, d.start, d.end, fd, req.id)

    def _ended(self, d: UtteranceEnded, now: float, out: Out) -> None:
        utt = self._open
        self._open = None
        if utt is None:
            return
        utt.end, utt.speech_ratio, utt.cut_at = d.end, d.speech_ratio, now
        utt.prefix = self._promised_tokens()
        first = utt.lead.start if utt.lead is not None else utt.start
        out.keep.append((utt.item, first, d.end))
        self._unresolved.append(utt)
        spec, self._speculative = self._speculative, None
        if spec is not None and spec.utt is utt and (spec.start, spec.end) == (d.start, d.end) and not d.noise:
            self.speculative_used += 1
            self._last_cut = utt
            utt.final = spec.final
            if spec.request:
                self._finals[spec.request] = (utt, spec.final)
            elif spec.final.done:
                self._resolve(utt, spec.final.result, now, out)
            return
        if spec is not None:
            self._stop(spec, out)
        if d.noise:
            self._resolve(utt, Final(dropped="noise"), now, out)
            return
        self._last_cut = utt
        if utt.lead is not None and utt.lead.result is None and utt.lead.failed is None:
            self._waiting_lead.append(utt)
            return
        self._start_final(utt, out)

    def _promised_tokens(self) -> tuple[int, ...]:
        """The open utterance's stable tokens: every decode of its final is forced to them."""
        return tuple(self._agreed[: self._promised])

    def _final_for(self, utt: _Utterance, start: int, end: int, ratio: float,
                   prefix: tuple[int, ...], stoppable: bool = False) -> FinalDecode:
        lead = utt.lead
        said = (lead.start, lead.result) if (
            lead is not None and lead.result is not None and lead.result.tokens
        ) else None
        return FinalDecode(self.tokens, utt.item, start, end, speech_ratio=ratio, prefix=prefix,
                           lead=said, fit=self.fit, stoppable=stoppable, heard=utt.heard)

    def _start_final(self, utt: _Utterance, out: Out) -> None:
        assert utt.end is not None
        fd = self._final_for(utt, utt.start, utt.end, utt.speech_ratio, utt.prefix)
        utt.final = fd
        req = self._request(fd.first(), out)
        self._finals[req.id] = (utt, fd)

    # -- results -----------------------------------------------------------------------------

    def _feed_speculative(self, spec: _Speculative, req: DecodeRequest,
                          result: Pass | BaseException, out: Out) -> None:
        if isinstance(result, BaseException) or result.stopped:
            self._speculative = None
            return
        nxt = spec.final.feed(result)
        if nxt is not None:
            spec.request = self._request(nxt, out).id
            return
        res = spec.final.result
        if not res.dropped and ends_sentence(res.text, res.words):
            out.sentence_end = spec.end

    def _feed_final(self, utt: _Utterance, fd: FinalDecode, result: Pass | BaseException,
                    now: float, out: Out) -> None:
        if isinstance(result, BaseException):
            utt.failed = f"decode failed: {result}"
            self._resolve(utt, None, now, out)
            return
        if result.stopped:  # a final the core needed was stopped: the shell is shutting down
            utt.failed = "decode stopped"
            self._resolve(utt, None, now, out)
            return
        nxt = fd.feed(result)
        if nxt is not None:
            self._finals[self._request(nxt, out).id] = (utt, fd)
            return
        self._resolve(utt, fd.result, now, out)

    def _resolve(self, utt: _Utterance, final: Final | None, now: float, out: Out) -> None:
        utt.result = final
        if final is None and utt.failed is None:
            utt.failed = "no final"
        utt.final = None
        if utt in self._unresolved:
            self._unresolved.remove(utt)
        out.released.append(utt.item)
        self.last_final_lag_s = max(0.0, now - utt.cut_at) if utt.cut_at else 0.0
        if final is not None:
            self._record(utt, final, out)
        # Sequels that waited for this line's text.
        for waiting in [u for u in self._waiting_lead if u.lead is utt]:
            self._waiting_lead.remove(waiting)
            self._start_final(waiting, out)
        utt.lead = None  # its final is done: what it went on from is no longer needed
        self._emit_ready(out)

    def _record(self, utt: _Utterance, final: Final, out: Out) -> None:
        start_ms, end_ms = _ms(utt.start), _ms(utt.end or utt.start)
        if final.dropped:
            reason = final.dropped if not final.text else f"trimmed_{final.dropped}"
            out.dropped.append(DroppedUtterance(utt.item, start_ms, end_ms, reason, final.dropped_text))
        for at_ms, reason, text in final.trimmed:
            out.dropped.append(DroppedUtterance(utt.item, at_ms, end_ms, f"trimmed_{reason}", text))

    # -- placing items in transcript order -----------------------------------------------------

    def _place(self, utt: _Utterance, out: Out) -> None:
        """Commit the utterance's item if the one before it has its lines out."""
        prev = utt.prev
        if utt.placed or (prev is not None and not prev.emitted):
            return
        utt.placed = True
        utt.prev_id = prev.last_id if prev is not None else None
        utt.prev = None  # placed: only the id of the line before it is needed
        ms = _ms(utt.start)
        out.events.append(ItemCommitted(utt.item, utt.prev_id, ms, ms))

    def _emit_ready(self, out: Out) -> None:
        # From the first utterance not yet emitted, in order, while each is placed and done.
        utt = self._first_unemitted()
        while utt is not None:
            self._place(utt, out)
            if not utt.placed or (utt.result is None and utt.failed is None):
                return
            self._emit_lines(utt, out)
            utt = utt.next

    def _first_unemitted(self) -> _Utterance | None:
        utt = self._last
        first = None
        while utt is not None and not utt.emitted:
            first = utt
            utt = utt.prev
        return first

    def _emit_lines(self, utt: _Utterance, out: Out) -> None:
        utt.emitted = True
        prev_id = utt.prev_id
        start_ms, end_ms = _ms(utt.start), _ms(utt.end or utt.start)
        utt.last_id = utt.item
        final = utt.result
        if utt.failed is not None or final is None:
            out.events.append(ItemCommitted(utt.item, prev_id, start_ms, end_ms))
            out.events.append(ItemFailed(utt.item, utt.failed or "no final"))
            return
        if final.words and self._last_words:
            # The utterance's pre-speech pad (or a cut inside a word) may hear the end of the
            # line before: the same join as a continuation's.
            kept, repeated = join(self._last_words, final.words)
            if repeated:
                out.dropped.append(DroppedUtterance(utt.item, repeated[0].start_ms, end_ms,
                                                    "trimmed_overlap", text_of(repeated)))
                final.words, final.text = tuple(kept), text_of(kept)
                # What a sequel of this line is given as said: the words it kept.
                final.tokens = self.tokens.encode(" " + final.text) if final.text else []
        if final.words:
            self._last_words = final.words
        language = final.language
        pieces = lines(final.words) if final.words and final.text == text_of(final.words) else []
        while len(pieces) > 1 and len(pieces[0]) < final.promised_words:
            pieces[0:2] = [pieces[0] + pieces[1]]  # stable text is never taken from its line
        if len(pieces) < 2:
            out.events.append(ItemCommitted(utt.item, prev_id, start_ms, end_ms))
            words = final.words if self.word_timestamps else ()
            out.events.append(ItemCompleted(utt.item, final.text, words, language))
            if final.text:
                self.finals_emitted += 1
            return
        previous = prev_id
        for k, piece in enumerate(pieces):
            item = utt.item if k == 0 else f"{utt.item}.{k}"
            s = start_ms if k == 0 else max(start_ms, piece[0].start_ms)
            e = end_ms if k == len(pieces) - 1 else min(end_ms, max(s, piece[-1].end_ms))
            out.events.append(ItemCommitted(item, previous, s, e))
            words = tuple(piece) if self.word_timestamps else ()
            out.events.append(ItemCompleted(item, text_of(piece), words, language))
            self.finals_emitted += 1
            previous = item
        utt.last_id = previous or utt.item

    # -- speculative finals ------------------------------------------------------------------

    def _drop_speculative(self, out: Out) -> None:
        """Speech resumed after a pause: the early final decode is of no use."""
        spec, self._speculative = self._speculative, None
        if spec is not None:
            self._stop(spec, out)

    def _stop(self, spec: _Speculative, out: Out) -> None:
        self.speculative_wasted += 1
        if spec.request:
            out.stop.append(spec.request)

    # -- partials ----------------------------------------------------------------------------

    def _request(self, req: DecodeRequest, out: Out) -> DecodeRequest:
        self._ids += 1
        req = replace(req, id=self._ids, words=req.kind == "final")
        out.requests.append(req)
        return req

    def _maybe_partial(self, end: int, out: Out) -> None:
        utt = self._open
        if not self.partials or utt is None:
            return
        so_far = (end - utt.start) / RATE
        every = max(self.partial_interval_s, PARTIAL_INTERVAL_SHARE * so_far)
        if not self._open_text:
            every = min(every, FIRST_TEXT_INTERVAL_S)
        if end - self._last_partial_at < int(every * RATE):
            return
        if self._partial is not None or self._finals or self._speculative is not None:
            self.partials_skipped += 1
            return
        self._last_partial_at = end
        self._partial = self._request(
            DecodeRequest(0, "partial", utt.item, utt.start, end, prefix=tuple(self._agreed)), out
        )

    def _partial_done(self, req: DecodeRequest, result: Pass | BaseException, out: Out) -> None:
        if self._partial is not None and self._partial.id == req.id:
            self._partial = None
        utt = self._open
        if isinstance(result, BaseException) or result.stopped or utt is None or utt.item != req.item:
            return  # the final is on its way; a late partial would only flicker
        if self._speculative is not None or tuple(self._agreed) != req.prefix:
            return  # a final decode already holds the agreed prefix: keep it fixed
        forced = bool(req.prefix)
        if guards.judge(result.new_text if forced else result.text,
                        no_speech_prob=result.no_speech_prob, avg_logprob=result.avg_logprob,
                        no_speech_test=not forced):
            return
        if (not self._open_text and result.avg_logprob < guards.LOGPROB_THRESHOLD
                and req.end - utt.heard < FIRST_TEXT_SURE_AFTER_S * RATE):
            return  # an unsure guess at the first syllables: wait for more speech
        self._agree(result.tokens, commit=req.end - req.start >= STABLE_AFTER_S * RATE)
        text = self.tokens.join(self._agreed, self._tail)
        if not text:
            return
        self._open_text = text
        self.partials_emitted += 1
        out.events.append(ItemPartial(utt.item, text, len(self._stable_text)))

    def _agree(self, tokens: list[int], commit: bool = True) -> None:
        """Local agreement: the words :data:`AGREE_PARTIALS` consecutive partials agree on are
        agreed, except the last :data:`HOLD_BACK_WORDS` of them (a word at the edge of the
        audio may still grow or be misheard): made stable with ``stable_text`` (never changed
        afterwards), else forced on later partials only. A candidate that would repeat a phrase
        is not agreed. ``tokens``: a partial's tokens after the agreed ones."""
        self._earlier.append(tokens)
        del self._earlier[:-AGREE_PARTIALS]
        agreed = 0
        if len(self._earlier) == AGREE_PARTIALS:
            for column in zip(*self._earlier):
                if any(t != column[0] for t in column):
                    break
                agreed += 1
        starts = [i for i in range(1, agreed) if self.tokens.starts_word(tokens[i])]
        cut = starts[-HOLD_BACK_WORDS] if len(starts) >= HOLD_BACK_WORDS else 0
        if cut and commit:
            candidate = self._agreed + tokens[:cut]
            text = self.tokens.join(candidate, [])
            if not guards.looks_repetitive(text):
                self._agreed = candidate
                if self.stable_text:
                    self._promised, self._stable_text = len(candidate), text
                self._earlier = [t[cut:] for t in self._earlier]
        self._tail = self._earlier[-1]

"""Joining text to audio already transcribed, and cutting a final into lines.  [pure: no I/O, no clock]

The local engine decodes some audio twice: a final whose decoder stopped early is *continued*
from where its words end, and speech that resumes right after a finished sentence is decoded
as the *sequel* of the line before (with that line's audio and text first). Either way the
new words are appended to words already given for the audio before them, and either way they
pass :func:`overlap`: a new word is never emitted again when its audio is already covered

- by time: it starts before the covered words end (less :data:`TIME_SLACK_MS`, since word
  timings from alignment are approximate), or
- by text: the new words begin, within :data:`TEXT_WITHIN_MS` of the covered words' end, with a
  run of words the covered ones hold (a suffix of one word or more, or a run of
  :data:`RUN_MIN_WORDS` or more anywhere in the last :data:`LOOKBACK_WORDS`): the decoder
  started over on audio it had transcribed.

The engine joins every final to the line before it the same way (an utterance's pre-speech
pad, or a cut inside a word, hears the end of the line before).

:func:`lines` cuts a final's words into the lines a reader follows: one sentence each (a
sentence end inside an utterance splits it, by the words' times), short sentences said in one
breath kept together.
"""

from __future__ import annotations

from collections.abc import Sequence

from captiond.engines.guards import plain, sentences
from captiond.events import Word

#: A new word that starts this much before the covered words end is still new (alignment
#: puts word edges a few tens of milliseconds off).
TIME_SLACK_MS = 200
#: A repeated run found anywhere among the last covered words ...
LOOKBACK_WORDS = 40
#: ... counts when it is at least this long (shorter runs repeat in real speech).
RUN_MIN_WORDS = 3

#: The text rules apply to new words that start within this of the covered words' end.
TEXT_WITHIN_MS = 1000

#: A sentence of at most this many words ...
SHORT_SENTENCE_WORDS = 3
#: ... joins the next one when the speaker goes on within this (a breath, not a turn).
SHORT_JOIN_GAP_MS = 300


def _key(word: Word) -> str:
    return plain(word.text)


def overlap(covered: Sequence[Word], new: Sequence[Word]) -> int:
    """How many of the first ``new`` words are already in ``covered`` (see the module)."""
    if not covered or not new:
        return 0
    end_ms = max(w.end_ms for w in covered)
    by_time = 0
    while by_time < len(new) and new[by_time].start_ms < end_ms - TIME_SLACK_MS:
        by_time += 1
    if new[0].start_ms - end_ms > TEXT_WITHIN_MS:
        return by_time  # said again after a pause: people repeat themselves
    tail = [_key(w) for w in covered[-LOOKBACK_WORDS:]]
    keys = [_key(w) for w in new]
    by_text = 0
    # A suffix of the covered words that the new ones begin with (longest first).
    for k in range(min(len(tail), len(keys)), 0, -1):
        if tail[-k:] == keys[:k] and any(keys[:k]):
            by_text = k
            break
    # A run of the new words' first ones anywhere among the last covered words.
    for k in range(min(len(tail), len(keys)), max(by_text, RUN_MIN_WORDS - 1), -1):
        run = keys[:k]
        if any(tail[i : i + k] == run for i in range(len(tail) - k + 1)):
            by_text = k
            break
    return max(by_time, by_text)


def join(covered: Sequence[Word], new: Sequence[Word]) -> tuple[list[Word], list[Word]]:
    """The new words to append after ``covered``, and those dropped as already covered."""
    n = overlap(covered, new)
    return list(new[n:]), list(new[:n])


def before(head: Sequence[Word], words: Sequence[Word]) -> list[Word]:
    """The words of ``head`` (decoded from the audio before ``words``) to put before them: those
    that start before them (less :data:`TIME_SLACK_MS`), less a run at their end that the
    first of ``words`` repeat."""
    if not words:
        return list(head)
    kept = [w for w in head if w.start_ms < words[0].start_ms - TIME_SLACK_MS]
    keys = [_key(w) for w in words]
    for k in range(min(len(kept), len(keys)), 0, -1):
        if [_key(w) for w in kept[-k:]] == keys[:k]:
            return kept[:-k]
    return kept


def text_of(words: Sequence[Word]) -> str:
    return " ".join(w.text for w in words).strip()


def lines(words: Sequence[Word]) -> list[list[Word]]:
    """The final's words cut into lines: at every sentence end, except that a short sentence
    (:data:`SHORT_SENTENCE_WORDS` words or fewer) joins the next one when it follows within
    :data:`SHORT_JOIN_GAP_MS` ("Yes. Yes, I think so." in one breath)."""
    out: list[list[Word]] = []
    for sentence in sentences(words):
        if out:
            last = out[-1]
            short = len(last) <= SHORT_SENTENCE_WORDS and len(sentence) <= SHORT_SENTENCE_WORDS
            if short and sentence[0].start_ms - last[-1].end_ms < SHORT_JOIN_GAP_MS:
                last.extend(sentence)
                continue
        out.append(list(sentence))
    return out

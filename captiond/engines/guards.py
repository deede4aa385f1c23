"""Text guards: whether a decoder's text is speech.  [pure: no I/O, no clock]

Whisper invents text for non-speech ("Thank you.", "Thanks for watching.") and loops on
itself. Every decode's text is judged here, from the text and the decoder's own scores; the
engine drops what is judged and records why (``captiond show --dropped`` lists it):

- ``no_speech``: Whisper's no-speech probability with a low log-probability (its own rule);
- ``phantom``: the classic phantom phrases (alone or one after another, "Thanks. Thank you.")
  with one sign of non-speech: little speech in the audio, a no-speech probability over 0.3,
  or a doubtful decoder (log-probability under Whisper's threshold); everyday back-channels
  such as "Okay." need two of the three; phrases nobody says in a meeting ("Thanks for
  watching", "Please subscribe") are dropped whatever the audio (:data:`NEVER_SPOKEN`);
- ``repetition``: a decoder loop (:func:`looks_repetitive`);
- ``punctuation`` / ``empty``: no words at all.

:func:`trim_tail` removes what a long text picks up at its end in the same way: a phantom
sentence after real speech ("... look at it. Thanks for watching.") and a run of one
back-channel ("Mhm. Mhm. Mhm.") beyond the first.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

from captiond.events import Word

#: Whisper's own thresholds for "this was not speech".
NO_SPEECH_THRESHOLD = 0.6
LOGPROB_THRESHOLD = -1.0
#: gzip compression ratio above which text is a repetition loop.
COMPRESSION_RATIO_THRESHOLD = 2.4
#: A word said this many times in a row is a decoder loop; fewer is how people talk ("yeah,
#: yeah, yeah", "no no no" are real turns in a conversation).
WORD_LOOP_TIMES = 4

#: Text Whisper produces for silence and noise (lowercase, no punctuation).
PHANTOM_PHRASES = frozenset(
    {
        "thank you",
        "thank you very much",
        "thanks for watching",
        "thank you for watching",
        "thanks for listening",
        "thank you for listening",
        "please subscribe",
        "subscribe to my channel",
        "you",
        "bye",
        "bye bye",
        "okay",
        "so",
        "the end",
        "music",
        "applause",
        "silence",
        "i'm sorry",
        "thanks",
    }
)

#: Phantom phrases that are also everyday back-channels ("Okay." between two turns): dropped
#: only when the audio has little speech *and* the model doubts it heard speech.
BACKCHANNELS = frozenset({"okay", "so", "bye", "bye bye", "thank you", "thanks", "i'm sorry"})

#: Phantom phrases from Whisper's training data (video outros) that nobody says in a meeting
#: or a call: dropped wherever they appear, alone or at the end of a line.
NEVER_SPOKEN = frozenset(
    {
        "thanks for watching",
        "thank you for watching",
        "thanks for listening",
        "thank you for listening",
        "please subscribe",
        "subscribe to my channel",
        "music",
        "applause",
        "silence",
    }
)

#: Sounds people make to show they listen; a run of one of them is said once.
FILLERS = frozenset({"mhm", "mm", "hmm", "mm hmm", "uh huh", "um", "uh", "ah", "oh", "yeah"})


def plain(text: str) -> str:
    """Lowercase words without punctuation: what two texts are compared by."""
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / max(1, len(zlib.compress(data)))


def looks_repetitive(text: str) -> bool:
    """A decoder loop: high compression ratio, one word :data:`WORD_LOOP_TIMES` times in a row,
    a phrase of two or three words three times in a row, or a run of four or more words twice
    in a row."""
    if len(text) > 40 and compression_ratio(text) > COMPRESSION_RATIO_THRESHOLD:
        return True
    words = plain(text).split()
    for n in range(1, len(words) // 2 + 1):
        times = 2 if n >= 4 else WORD_LOOP_TIMES if n == 1 else 3
        for i in range(len(words) - times * n + 1):
            run = words[i : i + n]
            if all(words[i + k * n : i + (k + 1) * n] == run for k in range(1, times)):
                return True
    return False


def judge(
    text: str, *, no_speech_prob: float = 0.0, avg_logprob: float = 0.0,
    speech_ratio: float = 1.0, no_speech_test: bool = True,
) -> str | None:
    """Why this text is not speech, or None. ``no_speech_test`` is off for text decoded after
    forced words (what was agreed or said before: the model's doubt about the whole window
    says nothing of the words after it)."""
    if not text.strip():
        return "empty"
    if no_speech_test and no_speech_prob > NO_SPEECH_THRESHOLD and avg_logprob < LOGPROB_THRESHOLD:
        return "no_speech"
    words = plain(text)
    if not words:
        return "punctuation"
    if words in NEVER_SPOKEN:
        return "phantom"
    # "Thanks. Thank you." is as much a phantom phrase as each of its sentences.
    phrases = {plain(s) for s in re.split(r"(?<=[.?!])\s+", text.strip())} - {""}
    if phrases and phrases <= PHANTOM_PHRASES:
        if not no_speech_test and no_speech_prob > NO_SPEECH_THRESHOLD:
            return "phantom"  # after forced words, a phantom phrase the model doubts is one
        signs = (speech_ratio < 0.5) + (no_speech_prob > 0.3) + (avg_logprob < LOGPROB_THRESHOLD)
        # Back-channels are real turns in a conversation: they need two signs of the three.
        if signs >= (2 if phrases <= BACKCHANNELS else 1):
            return "phantom"
    if looks_repetitive(text):
        return "repetition"
    return None


def sentences(words: Sequence[Word]) -> list[list[Word]]:
    """Words grouped into sentences (a sentence ends at a word ending in ``.``, ``?``, ``!``)."""
    out: list[list[Word]] = [[]]
    for w in words:
        out[-1].append(w)
        if w.text.endswith((".", "?", "!")) and not w.text.endswith(".."):
            out.append([])
    return [s for s in out if s]


def trim_tail(words: Sequence[Word]) -> tuple[list[Word], list[tuple[str, list[Word]]]]:
    """The words without what a decoder appends to real speech: sentences that are phantom
    phrases nobody says (:data:`NEVER_SPOKEN`) and repeats of a filler sentence beyond the
    first ("Mhm. Mhm. Mhm." -> "Mhm."). Returns the words kept and the (reason, words) cut."""
    kept: list[Word] = []
    cut: list[tuple[str, list[Word]]] = []
    last_filler = ""
    for sentence in sentences(words):
        said = plain(" ".join(w.text for w in sentence))
        if said in NEVER_SPOKEN:
            cut.append(("phantom", sentence))
            continue
        if said and said == last_filler:
            cut.append(("repetition", sentence))
            continue
        last_filler = said if said in FILLERS else ""
        kept.extend(sentence)
    return kept, cut

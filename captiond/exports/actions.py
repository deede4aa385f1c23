"""Decisions and action items found in a meeting transcript, deterministically [pure].

No model and no network: sentence rules tuned on how people actually speak in meetings.

Action items (owner, task, due phrase when stated)::

    "Alice will update the docs by Friday."          -> Alice: update the docs (by Friday)
    "Bob's going to look into the flaky test."        -> Bob: look into the flaky test
    "I'll send the notes after the meeting."          -> <speaker>: send the notes after the meeting
    "Dave, can you book the room for Thursday?"       -> Dave: book the room (for Thursday)
    "Action item for Erin: renew the certificate."    -> Erin: renew the certificate
    "Carol to draft the announcement."                -> Carol: draft the announcement
    "We need to fix the login bug before the release."-> (nobody yet): fix the login bug

Decisions::

    "We decided to go with Postgres."  "Let's go with option B."  "Agreed: we ship on Monday."

Left out on purpose: questions ("Should we go with B?"), negations ("Alice won't make it"),
hedges and states ("I'll be honest", "Bob will be out next week", "I can see that"),
conditionals ("If Alice will ...").
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Kind = Literal["decision", "action"]

#: Longest sentence the rules look at; longer run-ons are cut (bounded regex work).
MAX_SENTENCE_CHARS = 600


def _words(text: str) -> frozenset[str]:
    """A set of words written as one string (easier to read and edit than a list)."""
    return frozenset(text.split())


@dataclass(frozen=True, slots=True)
class Utterance:
    """One transcript line as the extractor sees it."""

    start_ms: int
    text: str
    speaker: str | None = None
    index: int = 0


@dataclass(frozen=True, slots=True)
class Finding:
    """A decision or action item. ``owner`` is None when nobody was named; ``self_assigned``
    when the speaker took it ("I'll ...") but the transcript has no speaker name."""

    kind: Kind
    text: str
    start_ms: int
    line_index: int
    owner: str | None = None
    due: str | None = None
    speaker: str | None = None
    sentence: str = ""
    self_assigned: bool = False


_FILLER = re.compile(
    r"^(?:(?:ok(?:ay)?|so|well|right|alright|all right|yeah|yep|yes|um+|uh+|erm|hmm|and|also|"
    r"then|great|good|sure|perfect|cool|fine|fair enough|sounds good|got it|oh|now|anyway|"
    r"actually|basically|honestly|i think(?: that)?|i guess|i believe|i suppose|probably|"
    r"maybe|hopefully)\b[,.!]?\s+)+",
    re.IGNORECASE,
)
_NOT_NAMES = _words(
"i we you they he she it this that these those the a an there here someone somebody "
    "everyone everybody nobody anyone anybody who what when where why how which maybe also "
    "then so and but or if okay ok yes no yeah well right great good thanks thank please let "
    "let's lets our my your their his her its one all both each none next last first action "
    "todo decision agreed item follow hey hi hello guys folks team time nice glad happy hard "
    "easy back up welcome sorry just now today tomorrow monday tuesday wednesday thursday "
    "friday saturday sunday something nothing everything anything people"
)
_NAME = r"[A-Z][a-zA-Z'’\-]+(?:\s+[A-Z][a-zA-Z\-]+)?"
_OWNER = rf"(?P<owner>{_NAME}(?:(?:,\s*|\s+and\s+){_NAME})*)"
_TASK = r"(?P<task>.+)"
_DAYS = r"(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)"
_MONTHS = (r"(?:january|february|march|april|may|june|july|august|september|october|november|"
           r"december|jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec)")
_NUM = r"(?:a|an|one|two|three|four|five|six|\d+|a couple of|a few)"
_WHEN = (
    rf"(?:(?:the\s+)?end of (?:the |this |next )?(?:day|week|month|quarter|year|sprint)|eod|eow|cob|"
    rf"close of business|tomorrow(?: morning| afternoon| evening| night)?|tonight|today|"
    rf"(?:next|this|the coming|coming)\s+(?:week|month|sprint|quarter|{_DAYS})|"
    rf"{_DAYS}(?:'s)?(?: morning| afternoon| evening| meeting)?|"
    rf"(?:the\s+)?\d{{1,2}}(?:st|nd|rd|th)(?: of {_MONTHS})?|"
    rf"{_MONTHS}\s+\d{{1,2}}(?:st|nd|rd|th)?|{_MONTHS}|"
    rf"\d{{1,2}}(?::\d{{2}})?\s*(?:am|pm|o'clock)|noon|midday|lunch(?:time)?|"
    rf"(?:the|our)\s+next\s+(?:meeting|sync|standup|stand-up|call|review|retro)|"
    rf"(?:the|our)\s+(?:release|launch|demo|deadline|review|offsite|board meeting|retro|"
    rf"code freeze|freeze|cutoff|cut-off)|(?:the\s+)?weekend)"
)
_DUE = re.compile(
    rf"\b(?:(?:by|before|until|till|no later than|due|on|for)\s+{_WHEN}"
    rf"|at\s+(?:\d{{1,2}}(?::\d{{2}})?\s*(?:am|pm|o'clock)|noon|midday)"
    rf"|(?:within|in)\s+(?:the next\s+)?{_NUM}\s+(?:hours?|days?|weeks?|months?)"
    rf"|tomorrow(?: morning| afternoon)?|tonight|today|later today|this afternoon|"
    rf"asap|as soon as possible|end of (?:the )?(?:day|week|month)|"
    rf"(?:next|this|the coming)\s+(?:week|month|sprint|quarter|{_DAYS}))\b",
    re.IGNORECASE,
)

_MODAL = (
    r"(?:will|'ll|’ll|is going to|'s going to|’s going to|is gonna|'s gonna|are going to|"
    r"are gonna|shall|has agreed to|have agreed to|agreed to|volunteered to|offered to|"
    r"promised to|needs to|need to|has to|have to|is responsible for|are responsible for|"
    r"is in charge of|owns|will own|is on|can take care of|will take care of|takes care of)"
)
_ACTION_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    # "Action item for Erin: renew ...", "Action: Dave to ...", "To-do: ..."
    ("marker", re.compile(
        r"^(?i:action items?|action|to-?do|to do|follow[- ]up|next steps?)"
        rf"(?:\s+(?i:for)\s+{_OWNER})?\s*[:,\-–—]\s*{_TASK}")),
    # "Dave, can you book ...", "Can you book ..., Dave?"
    ("request", re.compile(
        rf"^(?:{_OWNER},?\s+)?(?i:can|could|would|will) (?i:you|one of you)(?i:,? please)?,?\s+"
        rf"(?P<task>.+?)(?:,\s*(?P<owner2>{_NAME}))?\s*\??$")),
    # "Tom, you'll handle the deployment, right?"
    ("you_will", re.compile(
        rf"^{_OWNER},\s*you(?:'ll|’ll| will|'re going to|’re going to| are going to)\s+"
        rf"(?P<task>.+?)(?:,\s*(?i:right|ok|okay|yes))?\s*\??$")),
    # "The next step is for Maria to send ...", "Next steps: ..."
    ("next_step", re.compile(
        rf"^(?i:(?:the |our |one )?next steps? (?:is|are|will be))\s+(?:(?i:for)\s+{_OWNER}\s+"
        rf"to\s+|to\s+)(?P<task>.+)")),
    # "Bob, please send ..."
    ("please", re.compile(rf"^(?:{_OWNER},\s*)?(?i:please)\s+{_TASK}")),
    # "I'll ...", "I will ...", "I'm going to ...", "I can take ...", "Let me check ..."
    ("self", re.compile(
        r"^(?:i(?:'ll|’ll| will| shall)|i(?:'m|’m| am) (?:going to|gonna)|i can|i could|"
        r"let me|leave it with me[,.]?\s*i(?:'ll|’ll| will))\s+"
        r"(?:go ahead and |make sure (?:to|that i|i) |try to |also |then |just |definitely )?"
        + _TASK, re.IGNORECASE)),
    # "We need to fix ...", "Someone has to cover ..."
    ("team", re.compile(
        r"^(?:we(?:'ve|’ve| have)? got to|(?:we|we all|someone|somebody|one of us)\s+"
        r"(?:needs to|has to|need to|have to|must|should make sure to))\s+" + _TASK,
        re.IGNORECASE)),
    # "Alice will update ...", "Bob's going to ...", "Alice and Bob will ..."
    ("named", re.compile(rf"^{_OWNER}\s*,?\s*{_MODAL}\s+{_TASK}")),
    # minutes style: "Carol to draft ..."
    ("named_to", re.compile(rf"^{_OWNER}\s+to\s+(?P<task>[a-z].+)")),
)

#: Verbs after "I'll"/"Alice will" that describe a state or a manner of speaking, not a task.
_NOT_TASKS = _words(
"be know see understand like love hate want agree remember mind notice hear feel seem "
    "say admit tell guess think bet suppose assume imagine wonder pass leave stop start "
    "show share explain recap summarize summarise introduce interrupt jump repeat keep "
    "just also probably never not always still need"
)
_BE_TASK = re.compile(r"^be\s+(?:\w+ing\b|responsible|in charge|on point|the owner|owning)",
                      re.IGNORECASE)
_VAGUE_TASKS = frozenset(
    ["do that", "do it", "do this", "take it", "take that", "take this", "handle it", "handle that", "do so", "help", "try", "sure", "do my best"]
)
_DETERMINERS = _words("the a an our my your their this that these those its")
_STATEMENT_VERBS_FOR_CAN = _words("see hear tell imagine understand say confirm that")

_DECISION = re.compile(
    r"\b(?:we(?:'ve|’ve| have)?\s+(?:all\s+)?(?:decided|agreed|concluded|settled on|resolved|voted)"
    r"|(?:it's|it’s|it is|that's|that’s|that is)\s+(?:decided|agreed|settled|final|a decision)"
    r"|(?:the|our|final)\s+decision\s+(?:is|was)"
    r"|(?:so\s+)?(?:we're|we’re|we are)\s+(?:going with|going to go with|sticking with|"
    r"moving forward with|going ahead with|dropping|not going to|switching to)"
    r"|(?:let's|let’s|lets|let us)\s+(?:go with|stick with|use|adopt|ship|keep|drop|"
    r"move forward with|go ahead with|postpone|cancel|switch to|push|delay|freeze)"
    r"|(?:we'll|we’ll|we will)\s+(?:go with|use|adopt|ship|keep|stick with|switch to|"
    r"move forward with|go ahead with|postpone|cancel|drop|push|delay|release|launch)"
    r"|^(?:decision|agreed|resolved|decided)\s*[:,\-–—]"
    r"|(?:everyone|everybody|we all)\s+agree[sd]?\b"
    r"|\b(?:is|are|was|were|has been|have been|got)\s+(?:approved|signed off))",
    re.IGNORECASE,
)
#: "Let's X" / "we'll X" / "we're going to X" as people settle things in a meeting; the verbs
#: below are how they steer the talk instead ("let's see", "we'll talk about it").
_PLAN = re.compile(
    r"\b(?:let's|let’s|let us|we'll|we’ll|we will|we're going to|we’re going to|we are going to"
    r"|we're gonna|we’re gonna|we should go (?:for|with))\s+(?P<verb>[a-z]+)",
    re.IGNORECASE)
_PLAN_CHATTER = _words(
    "see start begin get talk think say look wait hope try just have move go come discuss "
    "recap summarize summarise continue carry break finish stop do be need find take meet "
    "check chat leave hear ask wrap introduce turn jump skip focus first all now maybe "
    "probably not never also still actually both"
)
_PLAN_CHATTER_PHRASES = re.compile(
    r"\b(?:go with|go for|go ahead|do (?:it|that|this|the|a)\b|take (?:the|a|that)|move (?:it|the|to)"
    r"|meet (?:again|on|next|at|tomorrow)|have (?:a|the) (?:button|\w+ button))",
    re.IGNORECASE)


def _plan_decision(sentence: str) -> re.Match[str] | None:
    """A "let's ..."/"we'll ..." that settles something, not one that steers the talk."""
    for m in _PLAN.finditer(sentence):
        verb = m.group("verb").lower()
        if verb not in _PLAN_CHATTER or _PLAN_CHATTER_PHRASES.match(sentence, m.start("verb")):
            return m
    return None


_NEGATED_DECISION = re.compile(
    r"\b(?:not|haven't|hasn't|didn't|don't|never|no)\s+(?:yet\s+)?(?:decided|agreed|approved)"
    r"|\b(?:if|whether|once|until|unless)\s+(?:we\s+)?(?:decide|agree)", re.IGNORECASE)

_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+")
# Clauses that may carry their own action: "... and Bob will ...", "We decided that Alice ..."
_CLAUSE_SPLIT = re.compile(
    r"(?:[,;]\s+|\s+(?:and then|and|but|so|that|then|also)\s+)"
    r"(?=(?:I\b|I'll|I’ll|(?:someone|somebody|we)\s+(?:needs?|has|have|must)\b|[A-Z][a-z]+(?:\s+and\s+[A-Z][a-z]+)?\s*,?\s*"
    + r"(?:will|'ll|’ll|is going|'s going|’s going|is gonna|to\s|can you|please|needs to|has to)))"
)


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_SPLIT.split(text[: MAX_SENTENCE_CHARS * 20]) if
            s.strip()]


def _clean(sentence: str) -> str:
    s = _HESITATION.sub("", sentence)
    s = re.sub(r",\s*,", ",", s)
    s = s.strip().strip("\"“”'").strip()
    for _ in range(3):  # "Okay, so, um, Alice will ..."
        s2 = _FILLER.sub("", s).lstrip(",. ")
        if s2 == s:
            break
        s = s2
    return s


def _owner_ok(owner: str | None) -> bool:
    if owner is None:
        return True
    first = re.sub(r"['’]s$", "", owner.split()[0].strip(",").lower())
    return first not in _NOT_NAMES


def _norm_owner(owner: str) -> str:
    owner = re.sub(r"['’]s$", "", owner.strip().rstrip(","))
    return re.sub(r"\s*,\s*", ", ", owner)


def _split_due(task: str) -> tuple[str, str | None]:
    """The task without a trailing due phrase, and that phrase."""
    matches = list(_DUE.finditer(task))
    if not matches:
        return task, None
    m = matches[-1]
    due = m.group(0)
    rest = (task[: m.start()] + task[m.end():]).strip()
    rest = re.sub(r"\s{2,}", " ", rest)
    rest = re.sub(r"\s+([,.;!?])", r"\1", rest)
    return rest, due


_TASK_LEAD = re.compile(
    r"^(?:take (?:the|an|that|this) action(?: item)? to|make sure (?:to|that|we)|go ahead and)\s+",
    re.IGNORECASE)
#: Hesitations anywhere in a sentence ("could you, um, check ...").
_HESITATION = re.compile(r"(?<![\w'’])(?:um+|uh+|erm+|uhm+|hmm+)(?![\w'’])[,.]?\s*",
                         re.IGNORECASE)


def _tidy(task: str) -> str:
    task = task.strip().rstrip(".!?;,:").strip()
    task = _TASK_LEAD.sub("", task)
    task = re.sub(r",?\s+(?:please|right|okay|ok|yeah|then|too|as well)$", "", task,
                  flags=re.IGNORECASE)
    task = re.sub(r"^(?:to|and)\s+", "", task, flags=re.IGNORECASE)
    return task.strip().rstrip(",.")


def _task_ok(task: str, rule: str) -> bool:
    words = task.split()
    if not words:
        return False
    first = words[0].lower().strip(",.")
    if first in ("not", "never", "n't") or task.rstrip().endswith("?") and rule not in (
            "request",):
        return False
    if first == "be":
        return bool(_BE_TASK.match(task))
    if first in _NOT_TASKS:
        return False
    if rule == "self" and first in _STATEMENT_VERBS_FOR_CAN:
        return False
    if task.lower().strip(" .!,") in _VAGUE_TASKS:
        return False  # "Sure, I can do that": agreement to an item already found
    # "Back to the agenda" is not Back's task
    return not (rule == "named_to" and first in _DETERMINERS)


def _match_action(clause: str, speaker: str | None) -> tuple[str | None, str, bool] | None:
    """(owner, task, self_assigned) for a clause that states an action, else None."""
    for rule, pattern in _ACTION_RULES:
        m = pattern.match(clause)
        if not m:
            continue
        groups = m.groupdict()
        owner = groups.get("owner") or groups.get("owner2")
        task = groups["task"]
        if rule == "named" and not _owner_ok(owner):
            continue
        if rule == "named_to" and (not _owner_ok(owner) or clause.endswith("?")):
            continue
        if owner is not None and not _owner_ok(owner):
            owner = None
        if rule in ("marker",):
            inner = _match_action(_clean(task), speaker)
            if inner is not None and inner[0] is not None:
                return inner
        if not _task_ok(task, rule):
            return None
        self_assigned = False
        if rule == "self":
            owner, self_assigned = speaker, speaker is None
        elif rule == "team":
            owner = None
        return (_norm_owner(owner) if owner else None, task, self_assigned)
    return None


def extract(utterances: Iterable[Utterance]) -> list[Finding]:
    """Decisions and action items in transcript order (duplicates said twice kept once)."""
    out: list[Finding] = []
    seen: set[tuple[str, str | None, str]] = set()
    for u in utterances:
        for raw in sentences(u.text):
            raw = raw[:MAX_SENTENCE_CHARS]
            sentence = _clean(raw)
            if not sentence:
                continue
            question = sentence.endswith("?")
            decision = None if question else (_DECISION.search(sentence)
                                              or _plan_decision(sentence))
            if decision and not _NEGATED_DECISION.search(sentence):
                text = _decision_text(sentence, decision.start())
                key: tuple[str, str | None, str] = ("decision", None, text.lower())
                if key not in seen:
                    seen.add(key)
                    out.append(Finding("decision", text, u.start_ms, u.index, speaker=u.speaker,
                                       sentence=raw))
            for clause in _clauses(sentence):
                found = _match_action(clause, u.speaker)
                if found is None:
                    continue
                owner, task, self_assigned = found
                task, due = _split_due(task)
                task = _tidy(task)
                if not task:
                    continue
                key = ("action", owner, task.lower())
                if key in seen:
                    continue
                seen.add(key)
                out.append(Finding("action", task, u.start_ms, u.index, owner=owner, due=due,
                                   speaker=u.speaker, sentence=raw,
                                   self_assigned=self_assigned))
    return out


def _decision_text(sentence: str, at: int) -> str:
    """The clause holding the decision: "After a long debate, we decided X" -> "We decided X"."""
    cut = sentence.rfind(", ", 0, at)
    text = sentence[cut + 2:] if cut >= 0 else sentence
    text = _tidy(text)
    return text[:1].upper() + text[1:]


_JUST_NAMES = re.compile(rf"^(?:{_NAME})(?:,\s*{_NAME})*$")


def _clauses(sentence: str) -> list[str]:
    parts = [p for p in _CLAUSE_SPLIT.split(sentence) if p and p.strip()]
    # "Sam and Lee will ..." was cut before "Lee will": join the names back together.
    merged: list[str] = []
    for p in parts:
        if (merged and _JUST_NAMES.match(merged[-1].strip()) and re.match(r"[A-Z][a-z]", p)
                and f"{merged[-1].strip()} and {p}" in sentence):
            merged[-1] = f"{merged[-1].strip()} and {p}"
        else:
            merged.append(p)
    parts = merged
    out = []
    for p in parts:
        c = _clean(p)
        if c:
            out.append(c)
    return out or [sentence]

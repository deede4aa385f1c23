"""Minutes by an OpenAI text model: the Responses API request and answer, as data [pure].

No I/O here: :func:`plan` splits a transcript into parts by a token budget and prices them
before anything is sent; :func:`request_body` is one part's ``POST /v1/responses`` body
(structured outputs: ``text.format = {"type": "json_schema", "strict": true, ...}``);
:func:`read_answer` turns the HTTP body of an answer into the part's minutes or a
:class:`Failure` that says why (refused, incomplete, not the schema); :func:`merge` joins the
parts' minutes in time order. The shell (:mod:`captiond.exports.produce`) does the HTTP.

Every item the model writes cites lines by the ids it was shown (``L12``); the cites are
checked against the transcript afterwards (:func:`captiond.exports.digest.check_cites`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from captiond.exports.digest import Cite, Item, Minutes, Topic
from captiond.exports.topics import TextLine
from captiond.timefmt import clock

#: Output tokens allowed per part (reasoning included); the cost estimate counts all of them.
MAX_OUTPUT_TOKENS = 16_000
#: Characters per token assumed when estimating (conservative for English; fewer chars per
#: token for other scripts make the estimate a little low, the cap has room for that).
CHARS_PER_TOKEN = 3.5
#: Tokens of the instructions and schema, counted once per part.
OVERHEAD_TOKENS = 1_200
#: The merge request of a meeting in parts: output allowed, and input counted per part (the
#: part's minutes, bounded by MAX_ITEMS items of MAX_TEXT characters, are far smaller).
MERGE_OUTPUT_TOKENS = 8_000
MERGE_INPUT_TOKENS_PER_PART = 4_000
#: Bounds on one answer: items per list, characters per text (a runaway answer is cut).
MAX_ITEMS = 60
MAX_TEXT = 600
#: Largest answer body read (bytes).
MAX_ANSWER_BYTES = 4 * 1024 * 1024

_CITES = {"type": "array", "items": {"type": "integer"},
          "description": "ids of the transcript lines this comes from (the number after L)"}
_STR = {"type": "string"}
_OPT = {"type": ["string", "null"]}


def _obj(props: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": dict(props), "required": list(props),
            "additionalProperties": False}


SCHEMA: dict[str, Any] = _obj({
    "summary": {"type": "array", "items": _obj({"text": _STR, "lines": _CITES}),
                "description": "3 to 6 short points: what the meeting was about and came to"},
    "topics": {"type": "array", "items": _obj({
        "title": _STR, "summary": _STR, "first_line": {"type": "integer"},
        "last_line": {"type": "integer"}, "lines": _CITES})},
    "decisions": {"type": "array", "items": _obj({"text": _STR, "lines": _CITES})},
    "actions": {"type": "array", "items": _obj({
        "task": _STR, "owner": {**_OPT, "description": "who takes it, as named; null if nobody"},
        "due": {**_OPT, "description": "the deadline as said; null if none was said"},
        "lines": _CITES})},
    "questions": {"type": "array", "items": _obj({"text": _STR, "lines": _CITES}),
                  "description": "questions raised and left open"},
})

MERGE_SCHEMA: dict[str, Any] = _obj({
    "summary": {"type": "array", "items": _obj({"text": _STR, "lines": _CITES}),
                "description": "3 to 6 short points on the whole meeting"},
})

MERGE_INSTRUCTIONS = """You are given the minutes of the consecutive parts of one long meeting.
Write in {language} a summary of the whole meeting: 3 to 6 short points on what was discussed
and concluded, in the order it happened. Each point cites in "lines" the line ids (the numbers
after L) of the part items it draws on. Use only what the part minutes say."""

INSTRUCTIONS = """You write the minutes of a meeting from its transcript.
Each transcript line reads: L<id> [time] Speaker: text (the speaker may be missing).
Write in {language}. Be brief and factual; use only what the transcript says.
- summary: 3 to 6 points on what was discussed and concluded.
- topics: the subjects in the order discussed, with the ids of their first and last lines.
- decisions: what the participants settled or agreed.
- actions: tasks someone takes on; owner is the person named or the speaker who took it
  (null if nobody), due is the deadline as said (null if none).
- questions: questions raised and left open.
Every item cites the ids of the lines it comes from in "lines". Never invent an item.
Ignore fillers and back-channels (mm-hmm, yeah, okay, um)."""


@dataclass(frozen=True)
class Part:
    lines: tuple[TextLine, ...]
    text: str
    input_tokens: int


@dataclass(frozen=True)
class Plan:
    parts: tuple[Part, ...]
    #: Upper bound in USD: every input token plus every allowed output token of every part.
    estimated_usd: float


@dataclass(frozen=True)
class Failure:
    """Why an answer gives no minutes; ``retry_after_s`` for a retryable one."""

    reason: str
    retryable: bool = False
    retry_after_s: float | None = None


@dataclass(frozen=True)
class Answer:
    minutes: Minutes
    input_tokens: int
    output_tokens: int


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def line_text(ln: TextLine) -> str:
    who = f"{ln.speaker}: " if ln.speaker else ""
    return f"L{ln.id} [{clock(ln.start_ms)}] {who}{' '.join(ln.text.split())}\n"


def cost(input_tokens: int, output_tokens: int, price_in: float, price_out: float) -> float:
    """USD for tokens at prices per million."""
    return (input_tokens * price_in + output_tokens * price_out) / 1_000_000


def plan(lines: Sequence[TextLine], part_tokens: int, price_in: float,
         price_out: float) -> Plan:
    """The transcript cut at line edges into parts of at most ``part_tokens`` (a single line
    longer than that is a part of its own), priced before sending."""
    parts: list[Part] = []
    chunk: list[TextLine] = []
    texts: list[str] = []
    tokens = 0
    for ln in lines:
        t = line_text(ln)
        n = estimate_tokens(t)
        if chunk and tokens + n > part_tokens:
            parts.append(Part(tuple(chunk), "".join(texts), tokens))
            chunk, texts, tokens = [], [], 0
        chunk.append(ln)
        texts.append(t)
        tokens += n
    if chunk:
        parts.append(Part(tuple(chunk), "".join(texts), tokens))
    usd = sum(cost(p.input_tokens + OVERHEAD_TOKENS, MAX_OUTPUT_TOKENS, price_in, price_out)
              for p in parts)
    if len(parts) > 1:
        usd += cost(OVERHEAD_TOKENS + MERGE_INPUT_TOKENS_PER_PART * len(parts),
                    MERGE_OUTPUT_TOKENS, price_in, price_out)
    return Plan(tuple(parts), usd)


def request_body(part: Part, *, model: str, language: str, index: int = 0,
                 count: int = 1) -> dict[str, Any]:
    """One part's ``POST /v1/responses`` body (not stored on OpenAI's side)."""
    where = "" if count == 1 else (
        f"\nThis is part {index + 1} of {count} of a long meeting; write the minutes of this "
        "part only.")
    body: dict[str, Any] = {
        "model": model,
        "instructions": INSTRUCTIONS.format(language=language or "the language of the "
                                            "transcript") + where,
        "input": [{"role": "user", "content": [{"type": "input_text", "text": part.text}]}],
        "text": {"format": {"type": "json_schema", "name": "meeting_minutes", "strict": True,
                            "schema": SCHEMA}},
        "max_output_tokens": MAX_OUTPUT_TOKENS,
        "store": False,
    }
    if model.startswith(("gpt-5", "o")):
        body["reasoning"] = {"effort": "low"}
    return body


def _check(value: Any, schema: Mapping[str, Any], where: str) -> str | None:
    """Why ``value`` does not match ``schema`` (the subset :data:`SCHEMA` uses), or None."""
    kind = schema["type"]
    kinds = kind if isinstance(kind, list) else [kind]
    ok = {"object": lambda v: isinstance(v, dict), "array": lambda v: isinstance(v, list),
          "string": lambda v: isinstance(v, str), "null": lambda v: v is None,
          "integer": lambda v: isinstance(v, int) and not isinstance(v, bool)}
    if not any(ok[k](value) for k in kinds):
        return f"{where} is not {' or '.join(kinds)}"
    if isinstance(value, dict):
        props = schema["properties"]
        if set(value) != set(props):
            return f"{where} has keys {sorted(value)}, expected {sorted(props)}"
        for k, sub in props.items():
            problem = _check(value[k], sub, f"{where}.{k}")
            if problem:
                return problem
    if isinstance(value, list):
        for i, v in enumerate(value):
            problem = _check(v, schema["items"], f"{where}[{i}]")
            if problem:
                return problem
    return None


def _cites(ids: Sequence[int], by_id: Mapping[int, TextLine]) -> tuple[Cite, ...]:
    # the model names ids only; a missing id keeps start -2, so check_cites drops it
    return tuple(Cite(i, by_id[i].start_ms if i in by_id else -2) for i in ids[:20])


def _text(s: str) -> str:
    return " ".join(s.split())[:MAX_TEXT]


def to_minutes(data: Mapping[str, Any], part: Part) -> Minutes:
    """A schema-valid answer as minutes of the part (cites still to be checked)."""
    by_id = {ln.id: ln for ln in part.lines}
    topics = []
    for t in data["topics"][:MAX_ITEMS]:
        first = by_id.get(t["first_line"], part.lines[0])
        last = by_id.get(t["last_line"], part.lines[-1])
        if last.id < first.id:
            first, last = last, first
        topics.append(Topic(_text(t["title"]), first.start_ms, last.end_ms,
                            _text(t["summary"]), _cites(t["lines"] or [first.id], by_id)))
    cut = [f"{len(data[k])} {k}" for k in ("summary", "topics", "decisions", "actions",
                                             "questions") if len(data[k]) > MAX_ITEMS]
    notes = (f"The model listed {', '.join(cut)}; the first {MAX_ITEMS} of each are kept.",
             ) if cut else ()
    return Minutes(
        "openai",
        notes=notes,
        summary=tuple(Item(_text(s["text"]), _cites(s["lines"], by_id))
                      for s in data["summary"][:MAX_ITEMS]),
        topics=tuple(topics),
        decisions=tuple(Item(_text(d["text"]), _cites(d["lines"], by_id))
                        for d in data["decisions"][:MAX_ITEMS]),
        actions=tuple(Item(_text(a["task"]), _cites(a["lines"], by_id),
                           owner=_text(a["owner"]) or None if a["owner"] else None,
                           due=_text(a["due"]) or None if a["due"] else None)
                      for a in data["actions"][:MAX_ITEMS]),
        questions=tuple(Item(_text(q["text"]), _cites(q["lines"], by_id))
                        for q in data["questions"][:MAX_ITEMS]))


def _payload(status: int, body: bytes, headers: Mapping[str, str],
             schema: Mapping[str, Any]) -> tuple[dict[str, Any], int, int] | Failure:
    """The answer's schema-valid JSON and the tokens used, or why there is none."""
    if status == 429 or status >= 500:
        return Failure(f"HTTP {status}{_error_text(body)}", retryable=True,
                       retry_after_s=_retry_after(headers))
    if status in (401, 403):
        return Failure(f"HTTP {status}{_error_text(body)} (check OPENAI_API_KEY or "
                       "openai.api_key_file)")
    if status != 200:
        return Failure(f"HTTP {status}{_error_text(body)}")
    if len(body) > MAX_ANSWER_BYTES:
        return Failure(f"the answer is larger than {MAX_ANSWER_BYTES} bytes")
    try:
        data = json.loads(body)
    except ValueError:
        return Failure("the answer is not JSON")
    if not isinstance(data, dict):
        return Failure("the answer is not a JSON object")
    usage = data.get("usage")
    if not isinstance(usage, dict):
        usage = {}
    tokens_in = int(usage.get("input_tokens") or 0)
    tokens_out = int(usage.get("output_tokens") or 0)
    if data.get("status") != "completed":
        details = data.get("incomplete_details")
        why = (details.get("reason") if isinstance(details, dict) else None) or data.get("error") or "?"
        return Failure(f"the answer is {data.get('status')!s} ({why}); "
                       f"{tokens_out} output tokens used")
    texts, refusals = [], []
    for item in data.get("output") or []:
        if not isinstance(item, dict) or item.get("type") != "message":
            continue
        for c in item.get("content") or []:
            if not isinstance(c, dict):
                continue
            if c.get("type") == "output_text":
                texts.append(str(c.get("text", "")))
            elif c.get("type") == "refusal":
                refusals.append(str(c.get("refusal", "")))
    if refusals:
        return Failure(f"the model refused: {_text(refusals[0])[:200]}")
    if not texts:
        return Failure("the answer has no text")
    try:
        result = json.loads("".join(texts))
    except ValueError:
        return Failure("the answer's text is not JSON (cut short?)")
    problem = _check(result, schema, "minutes")
    if problem:
        return Failure(f"the answer does not follow the schema: {problem}")
    return result, tokens_in, tokens_out


def read_answer(status: int, body: bytes, headers: Mapping[str, str],
                part: Part) -> Answer | Failure:
    """An HTTP answer of ``POST /v1/responses`` as the part's minutes, or why not."""
    got = _payload(status, body, headers, SCHEMA)
    if isinstance(got, Failure):
        return got
    result, tokens_in, tokens_out = got
    return Answer(to_minutes(result, part), tokens_in, tokens_out)


def merge_request_body(answers: Sequence[Answer], *, model: str,
                       language: str) -> dict[str, Any]:
    """The request that sums up a meeting from its parts' minutes (small: no transcript)."""
    out = []
    for i, a in enumerate(answers):
        m = a.minutes
        span = f"{clock(m.topics[0].start_ms)}–{clock(m.topics[-1].end_ms)}" if m.topics else ""
        out.append(f"## Part {i + 1} {span}\n")
        for title, items in (("Summary", m.summary), ("Decisions", m.decisions),
                             ("Actions", m.actions), ("Open questions", m.questions)):
            if items:
                out.append(f"{title}:\n")
                out += [f"- {it.text}{_ids(it.cites)}\n" for it in items[:MAX_ITEMS]]
        if m.topics:
            out.append("Topics:\n")
            out += [f"- {t.title}: {t.summary}{_ids(t.cites)}\n" for t in m.topics[:MAX_ITEMS]]
    body = request_body(Part((), "".join(out), 0), model=model, language=language)
    body["instructions"] = MERGE_INSTRUCTIONS.format(
        language=language or "the language of the part minutes")
    body["text"]["format"] = {"type": "json_schema", "name": "meeting_summary",
                              "strict": True, "schema": MERGE_SCHEMA}
    body["max_output_tokens"] = MERGE_OUTPUT_TOKENS
    return body


def _ids(cites: Sequence[Cite]) -> str:
    return f" ({', '.join(f'L{c.line}' for c in cites)})" if cites else ""


@dataclass(frozen=True)
class MergeAnswer:
    summary: tuple[Item, ...]
    input_tokens: int
    output_tokens: int


def read_merge(status: int, body: bytes, headers: Mapping[str, str],
               lines: Sequence[TextLine]) -> MergeAnswer | Failure:
    """The merge request's answer: the whole meeting's summary points, or why not."""
    got = _payload(status, body, headers, MERGE_SCHEMA)
    if isinstance(got, Failure):
        return got
    result, tokens_in, tokens_out = got
    by_id = {ln.id: ln for ln in lines}
    summary = tuple(Item(_text(p["text"]), _cites(p["lines"], by_id))
                    for p in result["summary"][:MAX_ITEMS])
    return MergeAnswer(summary, tokens_in, tokens_out)


def _error_text(body: bytes) -> str:
    try:
        message = json.loads(body[:65536])["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return ""
    return f": {_text(str(message))[:200]}"


def _retry_after(headers: Mapping[str, str]) -> float | None:
    low = {k.lower(): v for k, v in headers.items()}
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            return max(0.0, float(low[name]) * scale)
        except (KeyError, ValueError):
            continue
    return None


def merge(answers: Sequence[Answer], *, model: str, language: str | None, price_in: float,
          price_out: float, overall: MergeAnswer | None = None) -> Minutes:
    """The parts' minutes in time order, one set; the summary is ``overall`` when the merge
    request answered, else the parts' summary points in order. The cost is the sum of the
    tokens used by every request."""
    tokens_in = sum(a.input_tokens for a in answers) + (overall.input_tokens if overall else 0)
    tokens_out = sum(a.output_tokens for a in answers) + (overall.output_tokens if overall
                                                         else 0)
    seen: set[tuple[str, str]] = set()

    def unique(kind: str, items: Sequence[Item]) -> tuple[Item, ...]:
        out = []
        for it in items:
            key = (kind, it.text.lower())
            if key not in seen:
                seen.add(key)
                out.append(it)
        return tuple(out)

    ms = [a.minutes for a in answers]
    notes = tuple(n for m in ms for n in m.notes)
    if len(ms) > 1:
        notes += (f"summarised in {len(answers)} parts, merged in time order",)
    summary = overall.summary if overall else unique("s", [i for m in ms for i in m.summary])
    return replace(
        ms[0], summary=summary,
        topics=tuple(t for m in ms for t in m.topics),
        decisions=unique("d", [i for m in ms for i in m.decisions]),
        actions=unique("a", [i for m in ms for i in m.actions]),
        questions=unique("q", [i for m in ms for i in m.questions]),
        notes=notes, model=model, language=language, input_tokens=tokens_in,
        output_tokens=tokens_out, cost_usd=cost(tokens_in, tokens_out, price_in, price_out))

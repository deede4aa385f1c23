"""Writing a session's minutes: with an OpenAI text model when asked and possible, else offline.

The I/O shell around :mod:`captiond.exports.responses` (pure): it prices the request before
sending (beyond ``minutes.max_cost_usd`` nothing is sent), posts each part to the Responses
API with the standard library's HTTP client, retries 429 and 5xx answers a bounded number of
times (honouring ``retry-after``), and checks every cite against the transcript. Any failure
(refusal, incomplete or schema-invalid answer, timeout, HTTP error) gives *offline* minutes
instead, with the reason in a note and in the log: minutes are never made up from a failed
answer.

Why the standard library and not the ``openai`` package: one JSON POST, no streaming, and the
package would add its HTTP stack and pydantic to a daemon that needs neither. The tests check
the requests against the ``openai`` package's own types.

The API key never reaches a log line (it is registered with the log redactor), the database
or a page (error texts from the service are stripped of it before they are kept).
"""

from __future__ import annotations

import datetime as dt
import functools
import http.client
import json
import logging
import random
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from captiond.exports import digest
from captiond.exports.digest import Minutes
from captiond.exports.document import SessionExport
from captiond.exports.responses import (
    MAX_ANSWER_BYTES,
    Answer,
    Failure,
    MergeAnswer,
    Part,
    merge,
    merge_request_body,
    plan,
    read_answer,
    read_merge,
    request_body,
)
from captiond.logs import register_secret

log = logging.getLogger("captiond.minutes")

#: Attempts per part (the first and the retries of a 429/5xx/timeout).
MAX_ATTEMPTS = 3
#: Longest wait a ``retry-after`` may ask for; beyond it the part fails (offline minutes).
MAX_RETRY_AFTER_S = 60.0
#: Waits before the second and third attempt when the service gives no ``retry-after``.
BACKOFF_S = (2.0, 8.0)


@dataclass(frozen=True)
class Options:
    engine: str = "auto"
    model: str = "gpt-5-mini"
    language: str = ""
    max_cost_usd: float = 0.50
    url: str = "https://api.openai.com/v1/responses"
    price_in: float = 0.25
    price_out: float = 2.00
    part_tokens: int = 60_000
    timeout_s: float = 120.0
    backoff_s: tuple[float, ...] = BACKOFF_S

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> Options:
        return cls(engine=cfg["minutes.engine"], model=cfg["minutes.model"],
                   language=cfg["minutes.language"], max_cost_usd=cfg["minutes.max_cost_usd"],
                   url=cfg["minutes.url"], price_in=cfg["minutes.price_input_per_mtok"],
                   price_out=cfg["minutes.price_output_per_mtok"],
                   part_tokens=cfg["minutes.part_tokens"], timeout_s=cfg["minutes.timeout_s"])


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def post(url: str, key: str, body: Mapping[str, Any],
         timeout_s: float) -> tuple[int, bytes, dict[str, str]] | Failure:
    """One POST; the HTTP status, body and headers, or a Failure for no answer at all."""
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 - https URL setting
            return resp.status, resp.read(MAX_ANSWER_BYTES + 1), dict(resp.headers.items())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read(65536), dict(exc.headers.items())
    except (TimeoutError, socket.timeout):
        return Failure(f"no answer within {timeout_s:g} s (minutes.timeout_s)", retryable=True)
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError | socket.timeout):
            return Failure(f"no answer within {timeout_s:g} s (minutes.timeout_s)",
                           retryable=True)
        # not retried: an unknown host or a refused connection stays so for seconds
        return Failure(f"cannot reach {url}: {exc.reason} (check minutes.url and the network)")
    except OSError as exc:
        return Failure(f"cannot reach {url}: {exc} (check minutes.url and the network)")
    except http.client.HTTPException as exc:  # the answer was cut short
        return Failure(f"the answer from {url} was cut short ({type(exc).__name__}; retried)",
                       retryable=True)


T = TypeVar("T")


def ask(opts: Options, key: str, body: Mapping[str, Any],
        read: Callable[[int, bytes, dict[str, str]], T | Failure], *,
        sleep: Callable[[float], None] = time.sleep) -> T | Failure:
    """One request's answer as ``read`` makes it, retried on 429, 5xx and timeouts at most
    MAX_ATTEMPTS times."""
    result: T | Failure = Failure("not asked")
    for attempt in range(MAX_ATTEMPTS):
        raw = post(opts.url, key, body, opts.timeout_s)
        result = raw if isinstance(raw, Failure) else read(*raw)
        if not isinstance(result, Failure) or not result.retryable or \
                attempt + 1 == MAX_ATTEMPTS:
            return result
        wait = result.retry_after_s
        if wait is None:
            backoff = opts.backoff_s or BACKOFF_S
            wait = backoff[min(attempt, len(backoff) - 1)] * (0.5 + random.random())
        if wait > MAX_RETRY_AFTER_S:
            return replace(result, reason=f"{result.reason}; asked to wait {wait:.0f} s, more "
                           f"than {MAX_RETRY_AFTER_S:.0f} s")
        log.info("minutes.retry attempt=%d wait_s=%.2f reason=%r", attempt + 1, wait,
                 result.reason)
        sleep(wait)
    return result


def _read_part(status: int, raw: bytes, headers: dict[str, str], *,
               part: Part) -> Answer | Failure:
    return read_answer(status, raw, headers, part)


def write_minutes(doc: SessionExport, opts: Options, key: str | None, *,
                  sleep: Callable[[float], None] = time.sleep) -> Minutes:
    """The session's minutes: by the model when ``opts.engine`` and the key allow and every
    part is answered well, else offline (the note and the log say why)."""
    if key:
        register_secret(key)
    lines = digest.text_lines(doc.original)
    findings = doc.findings()

    def redact(text: str) -> str:
        return text.replace(key, "<redacted>") if key else text

    def offline(why: str | None = None) -> Minutes:
        notes: tuple[str, ...] = ()
        if why:
            why = redact(why)
            log.warning("minutes.offline session=%d reason=%r", doc.id, why)
            notes = (f"Offline minutes: {why.rstrip('. ')}.",)
        m = digest.offline(lines, findings, duration_ms=doc.duration_ms, generated_at=_now(),
                           notes=notes)
        return digest.check_cites(m, lines)[0]

    engine = opts.engine if opts.engine != "auto" else ("openai" if key else "offline")
    if engine == "offline" or not lines:
        return offline()
    if not key:
        return offline("no OpenAI API key (set OPENAI_API_KEY or openai.api_key_file, or "
                       "minutes.engine = \"offline\")")
    p = plan(lines, opts.part_tokens, opts.price_in, opts.price_out)
    log.info("minutes.plan session=%d parts=%d estimated_usd=%.4f cap_usd=%.2f", doc.id,
             len(p.parts), p.estimated_usd, opts.max_cost_usd)
    if p.estimated_usd > opts.max_cost_usd:
        return offline(f"the model would cost up to ${p.estimated_usd:.3f}, more than "
                       f"minutes.max_cost_usd = {opts.max_cost_usd:g} (raise it to use "
                       f"{opts.model})")
    language = opts.language or doc.language or ""
    answers: list[Answer] = []
    for i, part in enumerate(p.parts):
        body = request_body(part, model=opts.model, language=language, index=i,
                            count=len(p.parts))
        result = ask(opts, key, body, functools.partial(_read_part, part=part), sleep=sleep)
        if isinstance(result, Failure):
            where = f" (part {i + 1} of {len(p.parts)})" if len(p.parts) > 1 else ""
            return offline(f"{opts.model} gave no usable minutes{where}: {result.reason}")
        answers.append(result)
    overall: MergeAnswer | None = None
    merge_note: tuple[str, ...] = ()
    if len(answers) > 1:
        got = ask(opts, key, merge_request_body(answers, model=opts.model, language=language),
                  lambda status, raw, headers: read_merge(status, raw, headers, lines),
                  sleep=sleep)
        if isinstance(got, Failure):
            # the parts' own summary points stay (each from a good answer); nothing is made up
            reason = redact(got.reason)
            log.warning("minutes.merge_failed session=%d reason=%r", doc.id, reason)
            merge_note = (f"The summary of the whole meeting failed ({reason}); the "
                          "summary points are the parts' own.",)
        else:
            overall = got
    m = merge(answers, model=opts.model, language=language or None, price_in=opts.price_in,
              price_out=opts.price_out, overall=overall)
    m = replace(m, notes=(*m.notes, *merge_note))
    m, problems = digest.check_cites(m, lines)
    for problem in problems:
        log.info("minutes.cite session=%d %s", doc.id, problem)
    if problems:
        m = replace(m, notes=(*m.notes, f"{len(problems)} cites of the model did not match "
                                        "the transcript and were moved or dropped"))
    m = replace(m, generated_at=_now())
    log.info("minutes.written session=%d source=openai model=%s parts=%d input_tokens=%d "
             "output_tokens=%d cost_usd=%.4f", doc.id, opts.model, len(answers),
             m.input_tokens, m.output_tokens, m.cost_usd)
    return m


def save(store: Any, doc: SessionExport, m: Minutes) -> None:
    lines = digest.text_lines(doc.original)
    store.save_minutes(doc.id, digest.to_json(m, lines), source=m.source, model=m.model,
                       cost_usd=m.cost_usd)


def stored(store: Any, doc: SessionExport) -> Minutes | None:
    """The session's stored minutes (None if there are none or they cannot be read)."""
    row = store.minutes(doc.id)
    if row is None:
        return None
    try:
        return digest.from_json(row.content)
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("minutes.unreadable session=%d error=%r (run captiond minutes %d "
                    "--regenerate)", doc.id, str(exc), doc.id)
        return None

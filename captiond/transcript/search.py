"""Full-text search over transcript lines, with the same meaning on SQLite and PostgreSQL.

The query language (what ``captiond search`` and ``/api/search?q=`` accept)::

    budget review          lines with both words (any order, any case)
    "budget review"        the exact phrase
    budget OR finance      either word (OR in capitals; lowercase "or" is a word)
    budget -draft          budget, but not lines that also say draft
    budg*                  words starting with "budg" (at least MIN_PREFIX_CHARS letters)
    "budget rev"*          a phrase whose last word is a prefix

Anything else is literal text: FTS5 or tsquery operators, parentheses, quotes inside words
and SQL have no special meaning. Words are case-folded, not stemmed, with no stop words
(SQLite FTS5 ``unicode61`` and PostgreSQL's ``simple`` configuration; accents matter on both).

Layers: :func:`parse_query` (pure) turns text into a :class:`Query` or raises
:class:`SearchSyntaxError` with the fix; :func:`fts5_match` and :func:`pg_tsquery` compile it
for each engine; :func:`search` runs it, every user value a bound parameter; :func:`snippet`
(pure) highlights matches the same way for both engines.
"""

from __future__ import annotations

import datetime as dt
import functools
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    ColumnElement,
    String,
    and_,
    bindparam,
    column,
    func,
    literal_column,
    or_,
    select,
    table,
    text,
)
from sqlalchemy.exc import DatabaseError, OperationalError

from captiond.errors import CaptiondError, StoreError
from captiond.transcript.models import SegmentRow, SessionRow
from captiond.transcript.store import Store

#: Longest query accepted, in characters.
MAX_QUERY_CHARS = 1_000
#: Most words, phrases and prefixes in one query (each costs an index lookup).
MAX_QUERY_TERMS = 32
#: Shortest prefix (``bu*``): shorter ones match most of the vocabulary.
MIN_PREFIX_CHARS = 2
#: Hits returned by default and at most.
DEFAULT_LIMIT = 20
MAX_LIMIT = 200
#: Longest snippet, in characters (the whole line when it is shorter).
SNIPPET_MAX_CHARS = 160
#: Characters shown before the first match in a long line.
SNIPPET_LEAD_CHARS = 40
#: Matches ranked per search: the newest this many (after filters). A word in most lines
#: would otherwise make every search rank the whole archive; narrower queries rank all.
RANK_CANDIDATES = 2_000
#: A search on PostgreSQL is cancelled after this long.
PG_STATEMENT_TIMEOUT_MS = 10_000
#: PostgreSQL text search configuration and word splitting (as in migration 0002).
PG_TS_CONFIG = "simple"
PG_NON_WORD = "[^[:alnum:]]+"

SYNTAX_HELP = 'words, "exact phrases", OR, -excluded, prefix*'


class SearchSyntaxError(CaptiondError):
    """The search text cannot be understood; the message says what to write instead."""


# -- the query language (pure) ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Term:
    """A word or a phrase; ``prefix``: its last word is a prefix."""

    text: str
    phrase: bool = False
    prefix: bool = False

    @property
    def words(self) -> list[str]:
        """The words this term matches, lowercased as the indexes lowercase them."""
        return [w.lower() for w in words_of(self.text)]


@dataclass(frozen=True, slots=True)
class Query:
    """All of ``groups`` (each: any of its terms), none of ``excluded``."""

    groups: tuple[tuple[Term, ...], ...]
    excluded: tuple[Term, ...] = ()
    source: str = field(default="", compare=False)

    @property
    def terms(self) -> list[Term]:
        return [t for g in self.groups for t in g]


def _is_word_char(ch: str) -> bool:
    # FTS5 unicode61's token characters (its default categories "L* N* Co").
    cat = unicodedata.category(ch)
    return cat[0] in "LN" or cat == "Co"


def words_of(text_: str) -> list[str]:
    """The words of a text: maximal runs of letters, digits (and private-use characters)."""
    out: list[str] = []
    current: list[str] = []
    for ch in text_:
        if _is_word_char(ch):
            current.append(ch)
        elif current:
            out.append("".join(current))
            current = []
    if current:
        out.append("".join(current))
    return out


_OR = object()


def parse_query(source: str) -> Query:
    """Parse the search language (module docstring) or raise :class:`SearchSyntaxError`."""
    if len(source) > MAX_QUERY_CHARS:
        raise SearchSyntaxError(
            f"the search is too long ({len(source)} characters; at most {MAX_QUERY_CHARS}): "
            "search for a few distinctive words instead"
        )
    # Control characters (NUL included, which PostgreSQL refuses in text) separate words.
    source = "".join(" " if unicodedata.category(c) == "Cc" else c for c in source)
    tokens: list[Any] = []  # _OR or (negated, Term)
    i, n = 0, len(source)
    while i < n:
        ch = source[i]
        if ch.isspace():
            i += 1
            continue
        negate = False
        if ch == "-" and i + 1 < n and not source[i + 1].isspace():
            negate = True
            i += 1
        if source[i] == '"':
            end = source.find('"', i + 1)
            if end == -1:
                raise SearchSyntaxError(
                    f"a closing quote is missing after {source[i : i + 30]!r}: "
                    'write "exact phrase" with a quote at both ends'
                )
            body = source[i + 1 : end]
            i = end + 1
            prefix = i < n and source[i] == "*"
            if prefix:
                i += 1
            term = Term(body, phrase=True, prefix=prefix)
        else:
            end = i
            while end < n and not source[end].isspace() and source[end] != '"':
                end += 1
            body = source[i:end]
            i = end
            if body == "OR" and not negate:
                tokens.append(_OR)
                continue
            prefix = body.endswith("*")
            term = Term(body.rstrip("*"), prefix=prefix)
        tokens.append((negate, term))
    return _build(tokens, source)


def _build(tokens: list[Any], source: str) -> Query:
    groups: list[list[Term]] = []
    excluded: list[Term] = []
    pending_or = False
    previous: str | None = None  # "positive" or "excluded": the term before
    for tok in tokens:
        if tok is _OR:
            if previous == "excluded":
                raise SearchSyntaxError(
                    "an excluded term cannot be part of OR (write: budget OR finance -draft)"
                )
            if previous is None or pending_or:
                raise SearchSyntaxError(
                    "OR needs a word or phrase on both sides (write: budget OR finance)"
                )
            pending_or = True
            continue
        negate, term = tok
        if negate:
            if pending_or:
                raise SearchSyntaxError(
                    "an excluded term cannot be part of OR (write: budget OR finance -draft)"
                )
            excluded.append(term)
            previous = "excluded"
            continue
        if pending_or:
            groups[-1].append(term)
        else:
            groups.append([term])
        pending_or = False
        previous = "positive"
    if pending_or:
        raise SearchSyntaxError(
            "OR needs a word or phrase on both sides (write: budget OR finance)"
        )

    def keep(term: Term) -> bool:
        words = term.words
        if not words:
            return False  # punctuation only: neither engine indexes it
        if term.prefix and len(words[-1]) < MIN_PREFIX_CHARS:
            raise SearchSyntaxError(
                f"the prefix {words[-1] + '*'!r} is too short: give at least "
                f"{MIN_PREFIX_CHARS} letters before the *"
            )
        return True

    kept_groups = tuple(g for g in (tuple(t for t in grp if keep(t)) for grp in groups) if g)
    kept_excluded = tuple(t for t in excluded if keep(t))
    if not kept_groups:
        if kept_excluded:
            raise SearchSyntaxError(
                "a search needs at least one word to find, not only -excluded ones "
                "(write: budget -draft)"
            )
        raise SearchSyntaxError(f"nothing to search for: give some words ({SYNTAX_HELP})")
    count = sum(len(g) for g in kept_groups) + len(kept_excluded)
    if count > MAX_QUERY_TERMS:
        raise SearchSyntaxError(
            f"the search has {count} terms; at most {MAX_QUERY_TERMS} (use a phrase or fewer words)"
        )
    return Query(kept_groups, kept_excluded, source)


# -- compilation per engine (pure) -------------------------------------------------------------


def _fts5_term(term: Term) -> str:
    if term.prefix:
        # Prefix phrases use our word split, so the * applies to the last word we saw.
        return '"' + " ".join(term.words) + '" *'
    # Inside a double-quoted FTS5 string every character is literal; FTS5's own tokenizer
    # splits it (a quote is escaped by doubling, though the parser never leaves one in).
    return '"' + term.text.replace('"', '""') + '"'


def fts5_match(query: Query) -> str:
    """The FTS5 MATCH expression (to be bound as a parameter, never spliced into SQL)."""

    def group(terms: tuple[Term, ...]) -> str:
        return "(" + " OR ".join(_fts5_term(t) for t in terms) + ")"

    expr = " AND ".join(group(g) for g in query.groups)
    if query.excluded:
        expr = f"({expr}) NOT {group(query.excluded)}"
    return expr


def pg_tsquery(query: Query) -> ColumnElement[Any]:
    """The tsquery as a SQL expression; every piece of user text is a bound parameter.

    Plain words and phrases go through the same ``regexp_replace`` and ``phraseto_tsquery``
    as the indexed text, so they split into the same words. A prefix is written in tsquery
    syntax from our word split; those words hold only letters and digits, so no operator or
    quote can appear in it.
    """
    config: ColumnElement[Any] = literal_column(f"'{PG_TS_CONFIG}'::regconfig")

    def term_sql(term: Term) -> ColumnElement[Any]:
        if term.prefix:
            quoted = [f"'{w}'" for w in term.words]
            quoted[-1] += ":*"
            return func.to_tsquery(config, bindparam(None, " <-> ".join(quoted), String()))
        spaced = func.regexp_replace(
            bindparam(None, term.text, String()), literal_column(f"'{PG_NON_WORD}'"), " ", "g"
        )
        return func.phraseto_tsquery(config, spaced)

    def group(terms: tuple[Term, ...]) -> ColumnElement[Any]:
        return functools.reduce(func.tsquery_or, (term_sql(t) for t in terms))

    expr = functools.reduce(func.tsquery_and, (group(g) for g in query.groups))
    if query.excluded:
        expr = func.tsquery_and(expr, func.tsquery_not(group(query.excluded)))
    return expr


# -- snippets (pure) ------------------------------------------------------------------------


def _matcher(query: Query) -> tuple[set[str], tuple[str, ...]]:
    exact: set[str] = set()
    prefixes: list[str] = []
    for term in query.terms:
        words = term.words
        if term.prefix:
            exact.update(words[:-1])
            prefixes.append(words[-1])
        else:
            exact.update(words)
    return exact, tuple(prefixes)


def snippet(line: str, query: Query) -> tuple[str, list[tuple[int, int]]]:
    """An excerpt of ``line`` around the first match and the ``[start, end)`` spans of matches.

    Spans index into the returned excerpt. Lines up to :data:`SNIPPET_MAX_CHARS` are returned
    whole; longer ones are cut at word boundaries with ``…`` marking the cuts.
    """
    exact, prefixes = _matcher(query)
    spans: list[tuple[int, int]] = []
    i, n = 0, len(line)
    while i < n:
        if not _is_word_char(line[i]):
            i += 1
            continue
        j = i
        while j < n and _is_word_char(line[j]):
            j += 1
        word = line[i:j].lower()
        if word in exact or word.startswith(prefixes):
            spans.append((i, j))
        i = j
    if n <= SNIPPET_MAX_CHARS:
        return line, spans
    first = spans[0][0] if spans else 0
    start = max(0, first - SNIPPET_LEAD_CHARS)
    if start > 0:
        space = line.find(" ", start)
        start = space + 1 if 0 <= space < first else start
    end = min(n, start + SNIPPET_MAX_CHARS)
    if end < n:
        space = line.rfind(" ", start, end)
        end = space if space > first else end
    head = "…" if start > 0 else ""
    tail = "…" if end < n else ""
    shift = len(head) - start
    kept = [(a + shift, b + shift) for a, b in spans if a >= start and b <= end]
    return head + line[start:end] + tail, kept


def mark(excerpt: str, spans: list[tuple[int, int]], before: str, after: str) -> str:
    """``excerpt`` with every span wrapped in ``before``/``after`` (for terminals, markdown)."""
    out: list[str] = []
    pos = 0
    for a, b in spans:
        out.append(excerpt[pos:a])
        out.append(before + excerpt[a:b] + after)
        pos = b
    out.append(excerpt[pos:])
    return "".join(out)


# -- running a search ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One matching line, best first. ``score``: higher is better (not comparable across DBs)."""

    segment_id: int
    session_id: int
    session_title: str
    session_started_at: dt.datetime
    item_id: str
    track: str
    channel: str
    speaker: str | None
    language: str | None
    start_ms: int
    end_ms: int
    text: str
    snippet: str
    highlights: list[tuple[int, int]]
    score: float

    def to_json(self) -> dict[str, Any]:
        return {
            "segment_id": self.segment_id,
            "session": self.session_id,
            "session_title": self.session_title,
            "session_started_at": self.session_started_at.isoformat(),
            "item_id": self.item_id,
            "track": self.track,
            "channel": self.channel,
            "speaker": self.speaker,
            "language": self.language,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "text": self.text,
            "snippet": self.snippet,
            "highlights": [list(s) for s in self.highlights],
            "score": self.score,
        }


def _utc(value: dt.datetime | dt.date) -> dt.datetime:
    if not isinstance(value, dt.datetime):
        value = dt.datetime.combine(value, dt.time(), tzinfo=None)
    if value.tzinfo is None:
        value = value.astimezone()  # a naive time is local time
    return value.astimezone(dt.UTC)


def _until(value: dt.datetime | dt.date) -> dt.datetime:
    # A date as the end of a range includes that whole day.
    if not isinstance(value, dt.datetime):
        return _utc(value + dt.timedelta(days=1))
    return _utc(value)


def _statement(
    dialect: str,
    parsed: Query,
    joined: Any,
    conditions: list[ColumnElement[bool]],
    limit: int,
    id_range: tuple[int, int] | None,
) -> Any:
    """The newest :data:`RANK_CANDIDATES` matches (with filters), best ``limit`` of them first.

    ``id_range``: the lowest and highest line id the filters allow. Redundant with them, but
    the full-text index seeks to it instead of walking every newer match.
    """
    seg, ses = SegmentRow.__table__.c, SessionRow.__table__.c
    if dialect == "sqlite":
        fts = table("segments_fts", column("rowid"))
        # bm25() exists only beside MATCH; FTS5 walks matches newest first and stops at the
        # candidate limit, so it is computed for those candidates only.
        candidates = (
            select(seg.id.label("id"), (-func.bm25(literal_column("segments_fts"))).label("score"))
            .select_from(fts.join(joined, seg.id == fts.c.rowid))
            .where(text("segments_fts MATCH :match").bindparams(match=fts5_match(parsed)))
            .where(*conditions)
            .where(*([fts.c.rowid.between(*id_range)] if id_range else []))
            .order_by(fts.c.rowid.desc())
            .limit(RANK_CANDIDATES)
            .subquery("candidates")
        )
        score: Any = candidates.c.score
    else:
        tsv: ColumnElement[Any] = literal_column("segments.text_tsv")
        candidates = (
            select(seg.id.label("id"))
            .select_from(joined)
            .where(tsv.op("@@")(pg_tsquery(parsed)), *conditions)
            .where(*([seg.id.between(*id_range)] if id_range else []))
            .order_by(seg.id.desc())
            .limit(RANK_CANDIDATES)
            .subquery("candidates")
        )
        score = func.ts_rank_cd(tsv, pg_tsquery(parsed))
    columns = [
        seg.id,
        seg.session_id,
        seg.item_id,
        seg.track,
        seg.channel,
        seg.speaker,
        func.coalesce(seg.language, ses.language).label("language"),
        seg.audio_start_ms,
        seg.audio_end_ms,
        seg.text,
        ses.title,
        ses.source,
        ses.started_at,
        score.label("score"),
    ]
    return (
        select(*columns)
        .select_from(candidates.join(joined, seg.id == candidates.c.id))
        .order_by(literal_column("score").desc(), seg.id.desc())
        .limit(limit)
    )


def search(
    store: Store,
    query: str | Query,
    *,
    session: int | str | None = None,
    since: dt.datetime | dt.date | None = None,
    until: dt.datetime | dt.date | None = None,
    lang: str | None = None,
    speaker: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> list[SearchHit]:
    """Final lines matching ``query``, best first, at most ``limit`` (1..:data:`MAX_LIMIT`).

    Ranking: BM25 on SQLite, ``ts_rank_cd`` on PostgreSQL, newer lines first among equals.
    When more than :data:`RANK_CANDIDATES` lines match, the newest that many are ranked.

    Filters: ``session`` (id or ``last``); ``since``/``until``: when the session started
    (a date for ``until`` includes that day; naive times are local); ``lang``: lines in that
    language (a translation track, or an original line spoken in it); ``speaker``: exact, or
    in any case (SQLite folds ASCII letters only).
    Raises :class:`SearchSyntaxError` for a query it cannot read, :class:`SessionNotFound`
    for an unknown session, :class:`StoreError` when the database fails.
    """
    parsed = query if isinstance(query, Query) else parse_query(query)
    if not 1 <= limit <= MAX_LIMIT:
        raise SearchSyntaxError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    seg, ses = SegmentRow.__table__.c, SessionRow.__table__.c
    conditions: list[ColumnElement[bool]] = [seg.status == "final"]
    # Conditions on the session: they also bound the line ids searched (see _statement).
    scope: list[ColumnElement[bool]] = []
    if session is not None:
        scope.append(ses.id == store.resolve_session(session).id)
    if since is not None:
        scope.append(ses.started_at >= _utc(since))
    if until is not None:
        scope.append(ses.started_at < _until(until))
    conditions += scope
    if lang:
        conditions.append(
            or_(
                seg.track == lang,
                and_(seg.track == "original", func.coalesce(seg.language, ses.language) == lang),
            )
        )
    if speaker:
        # SQLite's lower() folds ASCII only: the exact spelling always matches too.
        conditions.append(or_(seg.speaker == speaker, func.lower(seg.speaker) == speaker.lower()))

    dialect = store.engine.dialect.name
    if dialect not in ("sqlite", "postgresql"):
        raise StoreError(f"search is not available on {dialect} (use sqlite or postgresql)")
    joined = SegmentRow.__table__.join(SessionRow.__table__, ses.id == seg.session_id)
    id_range: tuple[int, int] | None = None
    try:
        with store.engine.begin() as conn:
            if dialect == "postgresql":
                # Custom plans: psycopg prepares a statement run often, and a generic plan
                # cannot tell a rare word (use the GIN index) from a common one.
                conn.execute(
                    text(
                        "SELECT set_config('statement_timeout', :ms, true), "
                        "set_config('plan_cache_mode', 'force_custom_plan', true)"
                    ),
                    {"ms": str(PG_STATEMENT_TIMEOUT_MS)},
                )
            if scope:
                # Sessions first (a small table), then each one's lines by index.
                in_scope = seg.session_id.in_(select(ses.id).where(*scope))
                low, high = conn.execute(
                    select(func.min(seg.id), func.max(seg.id)).where(in_scope)
                ).one()
                if low is None:
                    return []
                id_range = (int(low), int(high))
            stmt = _statement(dialect, parsed, joined, conditions, limit, id_range)
            rows = conn.execute(stmt).all()
    except (DatabaseError, OperationalError) as exc:
        if "statement timeout" in str(exc):
            raise StoreError(
                f"the search took longer than {PG_STATEMENT_TIMEOUT_MS // 1000} s and was "
                "stopped (use fewer prefixes or more specific words)"
            ) from exc
        raise StoreError(store.describe_error(exc)) from exc

    hits = []
    for r in rows:
        excerpt, spans = snippet(r.text, parsed)
        started = r.started_at
        if started.tzinfo is None:  # SQLite keeps UTC without an offset
            started = started.replace(tzinfo=dt.UTC)
        hits.append(
            SearchHit(
                segment_id=r.id,
                session_id=r.session_id,
                session_title=r.title or r.source,
                session_started_at=started,
                item_id=r.item_id,
                track=r.track,
                channel=r.channel,
                speaker=r.speaker,
                language=r.language,
                start_ms=r.audio_start_ms,
                end_ms=r.audio_end_ms,
                text=r.text,
                snippet=excerpt,
                highlights=spans,
                score=float(r.score),
            )
        )
    return hits


__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "Query",
    "SearchHit",
    "SearchSyntaxError",
    "Term",
    "fts5_match",
    "mark",
    "parse_query",
    "pg_tsquery",
    "search",
    "snippet",
    "words_of",
]

"""Search: the query language, its compilation, and the same results on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import inspect

from captiond.errors import SessionNotFound
from captiond.events import Line, LineStatus
from captiond.transcript.search import (
    MAX_QUERY_CHARS,
    Query,
    SearchSyntaxError,
    Term,
    fts5_match,
    parse_query,
    search,
    snippet,
)
from captiond.transcript.store import Store

# -- the query language ---------------------------------------------------------------------


def test_parse_words_phrases_or_exclusion_prefix() -> None:
    """Each construct of the language becomes the right group, exclusion or prefix."""
    q = parse_query('budget "weekly review" OR planning -draft forec*  "next quar"*')
    assert q.groups == (
        (Term("budget"),),
        (Term("weekly review", phrase=True), Term("planning")),
        (Term("forec", prefix=True),),
        (Term("next quar", phrase=True, prefix=True),),
    )
    assert q.excluded == (Term("draft"),)
    assert fts5_match(q) == (
        '(("budget") AND ("weekly review" OR "planning") AND ("forec" *) AND ("next quar" *))'
        ' NOT ("draft")'
    )


def test_lowercase_or_and_operators_of_the_engines_are_words() -> None:
    """'or', AND, NEAR, ^, column filters and parentheses are plain text, not syntax."""
    q = parse_query("this or that AND NEAR(a b) ^x text:y {text}:z")
    words = [w for t in q.terms for w in t.words]
    assert words == ["this", "or", "that", "and", "near", "a", "b", "x", "text", "y", "text", "z"]
    assert q.excluded == ()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('"budget review', "closing quote"),
        ("OR budget", "both sides"),
        ("budget OR", "both sides"),
        ("budget OR OR finance", "both sides"),
        ("budget OR -draft", "excluded term cannot be part of OR"),
        ("-draft OR budget", "excluded term cannot be part of OR"),
        ("-draft -old", "not only -excluded"),
        ("", "nothing to search for"),
        ("  ?! ... ()  ", "nothing to search for"),
        ("b*", "too short"),
        ("x" * (MAX_QUERY_CHARS + 1), "too long"),
        (" ".join(f"w{i}" for i in range(40)), "at most"),
    ],
)
def test_syntax_errors_say_what_to_write(text: str, fragment: str) -> None:
    """Malformed queries raise SearchSyntaxError with a message naming the fix."""
    with pytest.raises(SearchSyntaxError, match=fragment):
        parse_query(text)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=80))
def test_any_text_parses_or_fails_cleanly_and_fts5_accepts_it(text: str) -> None:
    """For any input: a SearchSyntaxError, or an expression real FTS5 runs without error."""
    try:
        q = parse_query(text)
    except SearchSyntaxError:
        return
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE VIRTUAL TABLE f USING fts5(t, tokenize='unicode61 remove_diacritics 0')")
    conn.execute("INSERT INTO f VALUES ('some text')")
    conn.execute("SELECT rowid FROM f WHERE f MATCH ?", (fts5_match(q),)).fetchall()
    conn.close()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.text(max_size=60))
def test_any_text_runs_on_postgresql(pg_store: Store, text: str) -> None:
    """For any input: a SearchSyntaxError, or a tsquery real PostgreSQL runs without error."""
    try:
        q = parse_query(text)
    except SearchSyntaxError:
        return
    search(pg_store, q)


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[Store]:
    # Made once per test, shared by its hypothesis examples (they only read).
    store = Store.open(pg_url)
    yield store
    store.close()


def test_snippet_cuts_long_lines_around_the_first_match() -> None:
    """A long line is cut at word boundaries around the match; spans point at the match."""
    line = " ".join(["filler"] * 30) + " the Budget review " + " ".join(["more"] * 40)
    excerpt, spans = snippet(line, parse_query("budget rev*"))
    assert excerpt.startswith("…") and excerpt.endswith("…")
    assert len(excerpt) <= 162
    assert [excerpt[a:b] for a, b in spans] == ["Budget", "review"]
    whole, spans = snippet("Budgets, budget!", parse_query("budget"))
    assert (whole, spans) == ("Budgets, budget!", [(9, 15)])


# -- the same results on both databases ------------------------------------------------------

CORPUS = [
    # (session, item, text, speaker, language, track)
    (0, "a1", "We need the budget review by Friday", "Alice", "en", "original"),
    (0, "a2", "The budget is fine, says O'Brien", "Bob", "en", "original"),
    (0, "a3", "Review the draft budget before the all-hands", "Alice", "en", "original"),
    (0, "a4", "Mail bob@example.com about version 3.5", None, "en", "original"),
    (0, "a5", "Necesitamos revisar el presupuesto", None, "es", "es"),
    (1, "b1", "Budgeting for the café in Zürich 🎉", "Chen", "en", "original"),
    (1, "b2", "会议 planning for next quarter", "Chen", "en", "original"),
    (1, "b3", "Quarterly forecast and budget", "Dana", "de", "original"),
    (1, "b4", "partial budget text that is not final", None, "en", "original"),
]

EXPECTED = {
    "budget": {"a1", "a2", "a3", "b3"},
    "BUDGET review": {"a1", "a3"},
    '"budget review"': {"a1"},
    "budget -draft": {"a1", "a2", "b3"},
    "budg*": {"a1", "a2", "a3", "b1", "b3"},
    '"the budg"*': {"a1", "a2"},
    "draft OR forecast": {"a3", "b3"},
    "budget OR review -friday": {"a2", "a3", "b3"},
    "o'brien": {"a2"},
    "brien": {"a2"},
    "example": {"a4"},
    "3.5": {"a4"},
    "all-hands": {"a3"},
    "CAFÉ zürich": {"b1"},
    "cafe": set(),
    "会议": {"b2"},
    "presupuesto": {"a5"},
    "not final": set(),
}


@pytest.fixture
def corpus(any_db_url: str) -> Iterator[tuple[Store, list[int]]]:
    store = Store.open(any_db_url)
    sessions = [
        store.begin_session(source="mic", engine="test", title="Weekly planning", language="en"),
        store.begin_session(source="file:q3.ogg", engine="test", title=None, language="en"),
    ]
    # Session 0 started in 2026-10; session 1 now.
    store.update_session(sessions[0], started_at=dt.datetime(2026, 10, 1, 9, tzinfo=dt.UTC))
    for n, (s, item, text_, speaker, lang, track) in enumerate(CORPUS):
        status = LineStatus.PARTIAL if item == "b4" else LineStatus.FINAL
        line = Line(
            item_id=item,
            previous_item_id=None,
            seq=n,
            audio_start_ms=n * 10_000,
            audio_end_ms=n * 10_000 + 4_000,
            text=text_,
            status=status,
            speaker=speaker,
            language=lang if track == "original" else None,
            track=track,
        )
        store.write_lines(sessions[s], [line])
    yield store, sessions
    store.close()


@pytest.mark.parametrize("query", sorted(EXPECTED))
def test_results_mean_the_same_on_both_databases(
    corpus: tuple[Store, list[int]], query: str
) -> None:
    """Every query finds exactly the expected final lines, on SQLite and on PostgreSQL."""
    store, _ = corpus
    assert {h.item_id for h in search(store, query)} == EXPECTED[query]


def test_hits_are_ranked_and_carry_context(corpus: tuple[Store, list[int]]) -> None:
    """A phrase match ranks first; hits carry session title, time, snippet highlights."""
    store, sessions = corpus
    hits = search(store, "budget review")
    assert hits[0].item_id == "a1"
    assert hits[0].score >= hits[-1].score
    assert hits[0].session_title == "Weekly planning"
    assert hits[0].session_id == sessions[0]
    assert hits[0].start_ms == 0
    assert [hits[0].snippet[a:b] for a, b in hits[0].highlights] == ["budget", "review"]
    assert hits[0].session_started_at == dt.datetime(2026, 10, 1, 9, tzinfo=dt.UTC)
    untitled = search(store, "forecast")[0]
    assert untitled.session_title == "file:q3.ogg"
    assert len(search(store, "budget", limit=2)) == 2


def test_filters(corpus: tuple[Store, list[int]]) -> None:
    """session, since/until (session start), lang and speaker narrow the hits."""
    store, sessions = corpus
    def ids(**kw):
        return {h.item_id for h in search(store, "budget OR presupuesto", **kw)}
    assert ids(session=sessions[1]) == {"b3"}
    assert ids(session="last") == {"b3"}
    assert ids(since=dt.date(2026, 11, 1)) == {"b3"}
    assert ids(until=dt.date(2026, 10, 1)) == {"a1", "a2", "a3", "a5"}
    assert ids(until=dt.date(2026, 9, 30)) == set()
    assert ids(lang="es") == {"a5"}
    assert ids(lang="de") == {"b3"}
    assert ids(speaker="alice") == {"a1", "a3"}
    with pytest.raises(SessionNotFound):
        search(store, "budget", session=999_999)


HOSTILE = [
    "'; DROP TABLE segments; --",
    '"; DROP TABLE segments; --',
    "budget' OR '1'='1",
    'budget" OR "1"="1',
    '"""\'\'\' "',
    "NEAR(budget review, 2)",
    "text:budget",
    "{text}: budget",
    "budget AND NOT review",
    "^budget",
    "budget & !review | friday",
    "budget:* <-> review",
    "!!budget",
    "(((budget",
    "budget)))",
    "\x00budget\x00",
    "budget\u202eweiver",
    "бюджет 预算 ميزانية 🎉👍🏽",
    "e\u0301",
    "*",
    "-",
    "- -",
    '"',
    '""',
    '"" *',
    "budget " * 1_500,
    "b" * 10_240,
    ("x" * 200 + " ") * 50,
]


@pytest.mark.parametrize("query", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_input_gives_results_or_a_clear_error(
    corpus: tuple[Store, list[int]], query: str
) -> None:
    """Quotes, operators, SQL, unicode and 10 KB queries: hits or SearchSyntaxError, no harm."""
    store, _ = corpus
    try:
        hits = search(store, query)
    except SearchSyntaxError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        for hit in hits:
            assert "budget" in hit.text.casefold()
    assert {"sessions", "segments", "gaps"} <= set(inspect(store.engine).get_table_names())
    assert {h.item_id for h in search(store, "budget")} == EXPECTED["budget"]


def test_hostile_query_finds_what_its_words_say(corpus: tuple[Store, list[int]]) -> None:
    """Injection-shaped text is searched for as words: 'budget' OR '1'='1' finds budget lines."""
    store, _ = corpus
    # budget' OR '1'='1 is the word budget or the phrase "1 1": only budget lines match.
    got = {h.item_id for h in search(store, "budget' OR '1'='1")}
    assert got == EXPECTED["budget"]
    assert {h.item_id for h in search(store, "budget' '1'='1")} == set()
    assert {h.item_id for h in search(store, "NEAR(budget review, 2)")} == set()
    assert {h.item_id for h in search(store, "(((budget")} == EXPECTED["budget"]


def test_query_object_is_reusable() -> None:
    """A parsed Query is a value: equal text gives equal queries."""
    assert parse_query("a1 b2") == parse_query("a1  b2") == Query(((Term("a1"),), (Term("b2"),)))

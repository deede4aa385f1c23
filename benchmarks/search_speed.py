"""Search latency on a synthetic store of 1,000 meeting hours (~1,000,000 lines).

Prints build time, database size and p50/p99 latency of :func:`captiond.transcript.search.search`
for common words, rare words, phrases, prefixes and filtered searches. Target on SQLite:
p50 <= 50 ms and p99 <= 200 ms. Not run in CI (it takes minutes); figures only, no assertions.

    python benchmarks/search_speed.py                    # SQLite in a temp dir
    python benchmarks/search_speed.py --hours 100        # a quicker, smaller run
    python benchmarks/search_speed.py --db /tmp/big.db --keep   # reuse the store
    python benchmarks/search_speed.py --url postgresql+psycopg://u:p@host/db

Text is drawn from a Zipf-distributed synthetic vocabulary (so a handful of words appear in
a large share of lines, as "the" and "we" do in speech) plus a few rare marker words.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import os
import platform
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import kit
import numpy as np
from sqlalchemy import text

from captiond.transcript.search import search
from captiond.transcript.store import Store

#: One line every 3.6 s of meeting: 1,000 lines an hour.
LINES_PER_HOUR = 1_000
LINE_MS = 3_600
#: Words per line, uniform in this range.
WORDS_PER_LINE = (4, 18)
VOCABULARY = 30_000
ZIPF_EXPONENT = 1.1
#: Rows per executemany and per transaction while building.
BATCH_ROWS = 50_000
#: Rare marker words, each put into this many random lines.
RARE_WORDS = [f"zq{name}" for name in ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot")]
RARE_OCCURRENCES = 40
SEED = 6
RUNS_PER_QUERY = 5

SYLLABLES = ["ba", "ko", "ri", "tu", "me", "sa", "lo", "ne", "vi", "da", "pe", "gu", "fa", "zo"]


def vocabulary(rng: random.Random) -> list[str]:
    words: set[str] = set()
    real = [
        "the",
        "we",
        "to",
        "and",
        "a",
        "is",
        "of",
        "that",
        "it",
        "budget",
        "review",
        "meeting",
        "plan",
        "team",
        "next",
        "week",
        "quarter",
        "project",
        "customer",
        "sales",
        "report",
        "launch",
        "design",
        "hiring",
    ]
    out = list(dict.fromkeys(real))
    words.update(out)
    while len(out) < VOCABULARY:
        w = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))
        if w not in words:
            words.add(w)
            out.append(w)
    return out


def _when(value: dt.datetime, is_sqlite: bool) -> object:
    # SQLAlchemy keeps SQLite datetimes as naive UTC text in this format.
    return value.strftime("%Y-%m-%d %H:%M:%S.%f") if is_sqlite else value


def build(store: Store, hours: int) -> tuple[int, float]:
    """Fill the store; returns (lines, seconds)."""
    rng = random.Random(SEED)
    nprng = np.random.default_rng(SEED)
    vocab = np.array(vocabulary(rng), dtype=object)
    ranks = np.arange(1, len(vocab) + 1, dtype=np.float64)
    probs = ranks**-ZIPF_EXPONENT
    probs /= probs.sum()
    total = hours * LINES_PER_HOUR
    rare_at = {
        int(i): w for w in RARE_WORDS for i in nprng.choice(total, RARE_OCCURRENCES, replace=False)
    }
    t0 = time.perf_counter()
    start = dt.datetime(2024, 1, 1, 9, tzinfo=dt.UTC)
    speakers = ["Ann", "Bo", "Chen", "Dana", "Eli", "Fay"]
    raw = store.engine.raw_connection()
    try:
        cur = raw.cursor()
        is_sqlite = store.engine.dialect.name == "sqlite"
        ph = "?" if is_sqlite else "%s"
        if is_sqlite:
            cur.execute("PRAGMA synchronous=OFF")  # a benchmark build, not a daemon
        session_rows = [
            (
                f"Meeting {h}",
                start + dt.timedelta(days=h),
                start + dt.timedelta(days=h, hours=1),
                "completed",
                "synthetic",
                "bench",
                "en",
                "bench",
                3600.0,
                0.0,
            )
            for h in range(hours)
        ]
        cur.executemany(
            "INSERT INTO sessions (title, started_at, ended_at, status, source, engine, "
            f"language, host, audio_seconds, cost_usd) VALUES ({', '.join([ph] * 10)})",
            [
                (t, _when(s, is_sqlite), _when(e, is_sqlite), *rest)
                for t, s, e, *rest in session_rows
            ],
        )
        cur.execute("SELECT min(id) FROM sessions")
        row = cur.fetchone()
        assert row is not None
        first_sid = int(row[0])
        raw.commit()
        now = dt.datetime.now(dt.UTC)
        now_v = _when(now, is_sqlite)
        insert = (
            "INSERT INTO segments (session_id, track, channel, item_id, previous_item_id, seq, "
            "audio_start_ms, audio_end_ms, text, status, engine, language, speaker, "
            f"created_at, updated_at) VALUES ({', '.join([ph] * 15)})"
        )
        done = 0
        while done < total:
            n = min(BATCH_ROWS, total - done)
            lengths = nprng.integers(WORDS_PER_LINE[0], WORDS_PER_LINE[1] + 1, n)
            picks = nprng.choice(len(vocab), int(lengths.sum()), p=probs)
            words = vocab[picks]
            rows = []
            pos = 0
            for k in range(n):
                i = done + k
                line_words = list(words[pos : pos + lengths[k]])
                pos += lengths[k]
                if i in rare_at:
                    line_words[len(line_words) // 2] = rare_at[i]
                hour, seq = divmod(i, LINES_PER_HOUR)
                rows.append(
                    (
                        first_sid + hour,
                        "original",
                        "",
                        f"loc-{seq}",
                        f"loc-{seq - 1}" if seq else None,
                        seq,
                        seq * LINE_MS,
                        seq * LINE_MS + LINE_MS - 200,
                        " ".join(line_words),
                        "final",
                        "bench",
                        None,
                        speakers[(i // 7) % len(speakers)],
                        now_v,
                        now_v,
                    )
                )
            cur.executemany(insert, rows)
            raw.commit()
            done += n
            print(
                f"  built {done:,}/{total:,} lines ({time.perf_counter() - t0:.0f} s)", flush=True
            )
        if is_sqlite:
            cur.execute("INSERT INTO segments_fts(segments_fts) VALUES ('optimize')")
            raw.commit()
            # Fold the write-ahead log into the file, so the size below is the steady state.
            cur.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        else:
            cur.execute("ANALYZE")
            raw.commit()
    finally:
        raw.close()
    return total, time.perf_counter() - t0


def db_size(store: Store, path: Path | None) -> str:
    """The SQLite file with its WAL, or the tables and indexes of the PostgreSQL schema."""
    if path is not None:
        size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    else:
        with store.engine.connect() as conn:
            # The tables (with their indexes and TOAST) of the schema in use.
            size = conn.execute(
                text(
                    "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = current_schema() AND c.relkind = 'r'"
                )
            ).scalar_one()
    return f"{int(size) / 1e6:,.0f} MB"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(args: argparse.Namespace) -> dict[str, Any]:
    figures: dict[str, Any] = {"hours": args.hours, "kinds": {}}

    tmp = None
    path: Path | None = None
    if args.url:
        url = args.url
    else:
        if args.db is None:
            tmp = tempfile.TemporaryDirectory(prefix="captiond-bench-")
            path = Path(tmp.name) / "bench.db"
        else:
            path = args.db.resolve()
        url = f"sqlite:///{path}"
    store = Store.open(url)
    with store.engine.connect() as conn:
        existing = conn.execute(text("SELECT count(*) FROM segments")).scalar_one()
    expected = args.hours * LINES_PER_HOUR
    print(f"database: {store.engine.dialect.name}, {args.hours:,} meeting hours")
    if existing != expected:
        if existing:
            raise SystemExit(f"{url} holds {existing:,} lines, not {expected:,}: use a new --db")
        lines, seconds = build(store, args.hours)
        print(f"built {lines:,} lines in {seconds:.0f} s ({lines / seconds:,.0f} lines/s)")
        figures.update(built_lines=lines, build_s=seconds)
    else:
        print(f"reusing {existing:,} lines")
    print(f"database size: {db_size(store, path)} (for {expected:,} lines)")
    figures.update(database=store.engine.dialect.name, size=db_size(store, path), lines=expected)

    rng = random.Random(SEED + 1)
    vocab = vocabulary(random.Random(SEED))
    common = vocab[:12]
    medium = vocab[200:212]
    rare = RARE_WORDS
    categories = {
        "common word (the, we, budget...)": [[w] for w in common],
        "two common words": [[a, b] for a, b in zip(common, reversed(common))],
        "medium word (rank ~200)": [[w] for w in medium],
        "rare word (40 lines)": [[w] for w in rare],
        "phrase of common words": [[f'"{a} {b}"'] for a, b in itertools.pairwise(common)],
        "prefix (3 letters)": [[w[:3] + "*"] for w in medium],
        "common word, one session": [[w, "@session"] for w in common],
        "common word, date range": [[w, "@range"] for w in common],
        "rare OR rare -common": [[f"{a} OR {b} -{common[0]}"] for a, b in itertools.pairwise(rare)],
    }
    # Warm the cache as a running daemon's database would be.
    for _ in range(2):
        search(store, common[0])
    print(f"\n{'query kind':36} {'runs':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  hits")
    all_times: list[float] = []
    for label, queries in categories.items():
        times: list[float] = []
        hits = 0
        for words in queries:
            kw: dict[str, object] = {}
            terms = [w for w in words if not w.startswith("@")]
            if "@session" in words:
                kw["session"] = rng.randint(1, args.hours)
            if "@range" in words:
                day = dt.date(2024, 1, 1) + dt.timedelta(
                    days=rng.randint(0, max(0, args.hours - 30))
                )
                kw["since"], kw["until"] = day, day + dt.timedelta(days=30)
            for _ in range(RUNS_PER_QUERY):
                t0 = time.perf_counter()
                found = search(store, " ".join(terms), limit=20, **kw)  # type: ignore[arg-type]
                times.append((time.perf_counter() - t0) * 1000)
                hits = max(hits, len(found))
        all_times.extend(times)
        print(
            f"{label:36} {len(times):>5} {pct(times, 0.5):>8.1f} {pct(times, 0.99):>8.1f} "
            f"{max(times):>8.1f}  {hits}"
        )
        figures["kinds"][label] = {"runs": len(times), "p50_ms": pct(times, 0.5),
                                   "p99_ms": pct(times, 0.99), "max_ms": max(times), "hits": hits}
    print(
        f"{'all queries':36} {len(all_times):>5} {pct(all_times, 0.5):>8.1f} "
        f"{pct(all_times, 0.99):>8.1f} {max(all_times):>8.1f}"
    )
    figures["all"] = {"runs": len(all_times), "p50_ms": pct(all_times, 0.5),
                      "p99_ms": pct(all_times, 0.99), "max_ms": max(all_times)}
    print(
        f"\ncpu: {os.cpu_count()} cores; python {platform.python_version()}"
    )
    store.close()
    if tmp is not None and not args.keep:
        tmp.cleanup()
    elif tmp is not None:
        print(f"kept {path}")
    return figures


if __name__ == "__main__":
    ap = kit.parser(__doc__, raw=True)
    ap.add_argument("--hours", type=int, default=1_000, help="meeting hours to synthesise")
    ap.add_argument("--db", type=Path, help="SQLite file (default: a temporary one)")
    ap.add_argument("--url", help="any database URL instead of --db (e.g. PostgreSQL)")
    ap.add_argument("--keep", action="store_true", help="keep and reuse the database")
    kit.run(main, ap.parse_args())

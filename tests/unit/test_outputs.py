"""The caption outputs' pure parts: config tables and flags, roll-up rows, YouTube/Zoom/webhook
bodies, sequence numbers, clock correction, coalescing, bounds and retries."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from captiond import config, reload
from captiond.errors import ConfigError
from captiond.outputs import core
from captiond.outputs.spec import OutputSpec, parse_flags, resolve


def msg(item: str, text: str, status: str = "final", *, stable: int = 0, event: str = "",
        speaker: str | None = None, track: str = "original", channel: str = "") -> dict:
    return {"type": "line", "event": event or ("finalised" if status == "final" else "updated"),
            "session": 7, "item_id": item, "seq": 0, "track": track, "channel": channel,
            "speaker": speaker, "status": status, "text": text, "stable": stable,
            "start_ms": 1000, "end_ms": 2500, "engine": "local"}


def spec(kind: str, **kw: object) -> OutputSpec:
    table = {"kind": kind, **({"url": "https://example.test/cc"} if kind != "obs" else {}), **kw}
    return config.parse(_toml([table])).outputs[0]


def _toml(tables: list[dict]) -> str:
    out = []
    for t in tables:
        out.append("[[outputs]]")
        for k, v in t.items():
            out.append(f"{k} = {json.dumps(v)}")
    return "\n".join(out) + "\n"


# -- config ------------------------------------------------------------------------------------


def test_outputs_tables_parse_with_defaults_and_names() -> None:
    """[[outputs]] tables become specs; unnamed ones are named after their kind."""
    cfg = config.parse(
        '[vad]\nmin_silence_ms = 500\n\n[[outputs]]\nkind = "youtube"\nurl_file = "/x/yt"\n'
        '[[outputs]]\nkind = "youtube"\nurl_env = "YT2"\ntrack = "es"\n'
        '[[outputs]]\nkind = "obs"\npassword_env = "OBS_PW"\n', path=Path("c.toml"))
    names = [(o.name, o.kind, o.track) for o in cfg.outputs]
    assert names == [("youtube", "youtube", "original"), ("youtube-2", "youtube", "es"),
                     ("obs", "obs", "original")]
    assert cfg["vad.min_silence_ms"] == 500
    assert not cfg.outputs[2].partials  # finals only unless asked
    assert cfg.outputs[2].min_interval_s == 0.5


@pytest.mark.parametrize(("text", "fragment"), [
    ('[[outputs]]\nkind = "youtub"\nurl = "https://a"\n', "c.toml:2: outputs[1].kind must be one of"),
    ('[[outputs]]\nkind = "zoom"\nlang = "en-US"\n', "c.toml:1: outputs[1] (zoom) needs url"),
    ('[[outputs]]\nkind = "webhook"\nurl = "https://a"\nsecrt_file = "k"\n',
     "c.toml:4: unknown output setting outputs[1].secrt_file (did you mean secret_file?)"),
    ('[audio]\nsource = "mic"\n[[outputs]]\nkind = "obs"\n[[outputs]]\nkind = "zoom"\n'
     'url = "https://z"\npassword_file = "p"\n',
     "c.toml:8: outputs[2].password_file does not apply to a zoom output"),
    ('[[outputs]]\nkind = "obs"\ntrack = "Spanish"\n', "c.toml:3: outputs[1].track must be"),
    ('[[outputs]]\nkind = "obs"\nmin_interval_s = "1"\n', "c.toml:3: outputs[1].min_interval_s must be a number"),
    ('[outputs]\nkind = "obs"\n', "c.toml:1: outputs must be [[outputs]] tables"),
    ('[[outputs]]\nkind = "obs"\nname = "a"\n[[outputs]]\nkind = "zoom"\nname = "a"\nurl = "https://z"\n',
     "two outputs are named 'a'"),
])
def test_outputs_config_errors_name_the_line_and_fix(text: str, fragment: str) -> None:
    """A wrong [[outputs]] table is refused with its file:line, the key and what to do."""
    with pytest.raises(ConfigError) as err:
        config.parse(text, path=Path("c.toml"))
    assert fragment in str(err.value)


def test_literal_url_never_appears_in_an_error() -> None:
    """A caption URL written in the config carries its credentials: errors never repeat it."""
    with pytest.raises(ConfigError) as err:
        config.parse('[[outputs]]\nkind = "obs"\nurl = "https://secret-token-123"\n',
                     path=Path("c.toml"))
    assert "secret-token-123" not in str(err.value)
    assert "c.toml:3" in str(err.value)


def test_output_flags_follow_the_file_and_survive_a_reload(tmp_path: Path) -> None:
    """--output flags add outputs after the file's; a reload keeps them over the edited file."""
    path = tmp_path / "c.toml"
    path.write_text('[[outputs]]\nkind = "webhook"\nurl = "https://h/1"\n')
    cfg = config.load(path, env={}, overrides={"outputs": ["obs,password_env=PW",
                                                             "kind=webhook,url_env=HOOK"]})
    assert [(o.name, o.origin) for o in cfg.outputs] == [
        ("webhook", "file"), ("obs", "command line"), ("webhook-2", "command line")]
    path.write_text("")
    again = config.load(path, env={}, overrides=reload.overrides_of(cfg))
    assert [o.name for o in again.outputs] == ["obs", "webhook-2"]
    assert reload.plan(cfg, again).applied.outputs == again.outputs
    with pytest.raises(ConfigError, match="--output: item 3 is not key=value") as err:
        parse_flags(["kind=zoom,url=https://z/?a=1,tokenpart"])
    assert "tokenpart" not in str(err.value)


def test_secrets_come_from_files_or_the_environment(tmp_path: Path) -> None:
    """URL and password are read from the named file or variable; a missing one is an error
    that names the place and never the value."""
    url_file = tmp_path / "yt"
    url_file.write_text("https://upload.youtube.test/closedcaption?cid=SECRETKEY\n")
    s = OutputSpec(kind="youtube", name="yt", url_file=str(url_file))
    got = resolve(s, env={})
    assert got.url.endswith("cid=SECRETKEY") and "SECRETKEY" not in repr(got)
    assert "SECRETKEY" not in s.target()
    obs = OutputSpec(kind="obs", name="obs", password_env="OBS_PW")
    assert resolve(obs, env={"OBS_PW": "hunter22"}).password == "hunter22"
    with pytest.raises(ConfigError, match="OBS_PW .* is not set"):
        resolve(obs, env={})
    with pytest.raises(ConfigError, match="cannot read URL file"):
        resolve(OutputSpec(kind="zoom", name="z", url_file=str(tmp_path / "none")), env={})


# -- OBS roll-up --------------------------------------------------------------------------------

_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz'", min_size=1, max_size=40)


@given(st.lists(st.lists(_word, min_size=1, max_size=12), min_size=1, max_size=20))
@example([["aaaaaaaaaa", "aa", "aa", "a", "a", "a"], ["aaaaaaaaaa", "aa", "aa", "a", "a", "a"] * 2])
@settings(max_examples=300, deadline=None)
def test_rollup_rows_fit_608_and_keep_every_word(lines: list[list[str]]) -> None:
    """Rows never exceed 32 characters, captions show at most 2 rows, and the rows shown in
    order hold every word of every final, even when sends lag far behind."""
    p = core.ObsPlanner(spec("obs", speakers=False))
    shown_rows: list[tuple[int, str]] = []
    for i, words in enumerate(lines):
        p.offer(msg(f"i{i}", " ".join(words)), now=float(i))
    assert len(p.pending) <= core.MAX_PENDING["obs"]
    for state in p.pending:
        rows = state.text.split("\n")
        assert len(rows) <= core.ROLLUP_ROWS and all(len(r) <= core.ROW_CHARS for r in rows)
        shown_rows.extend((state.first_row + k, r) for k, r in enumerate(rows))
    if p.dropped:
        return
    # The latest text of each row index, in order, is the transcript.
    final_rows: dict[int, str] = {}
    for index, row in shown_rows:
        final_rows[index] = row
    text = "".join(final_rows[k].replace(" ", "") for k in sorted(final_rows))
    assert text == "".join("".join(w) for w in lines)


def test_obs_sends_only_stable_text() -> None:
    """A partial's unstable tail, and a word cut by the stable mark, are never sent."""
    p = core.ObsPlanner(spec("obs", speakers=False, partials=True))
    p.offer(msg("a", "the quick brown fax", "partial", stable=13), now=0.0)  # "the quick bro"
    assert [s.text for s in p.pending] == ["the quick"]
    p.offer(msg("a", "the quick brown fox jumps", "partial", stable=16), now=0.1)
    assert [s.text for s in p.pending] == ["the quick brown"]
    p.offer(msg("a", "the quick brown fox jumps over", "final"), now=0.2)
    assert [s.text for s in p.pending] == ["the quick brown fox jumps over"]
    assert p.pending[0].lines == 1
    p.offer(msg("b", "never shown", "partial", stable=0), now=0.3)
    p.offer(msg("b", "", "final", event="removed"), now=0.4)
    assert [s.text for s in p.pending] == ["the quick brown fox jumps over"]


def test_obs_marks_speaker_changes_and_respects_the_rate() -> None:
    """A new speaker starts a row with '>> Name:'; sends are min_interval_s apart."""
    p = core.ObsPlanner(spec("obs", min_interval_s=1.0))
    p.offer(msg("a", "hello there", speaker="Me", channel="mic"), now=0.0)
    send = p.next_send(0.0)
    assert send is not None and send.text == ">> Me: hello there"
    p.sent(send, 0.0)
    p.offer(msg("b", "hi", speaker="Them", channel="system"), now=0.1)
    assert p.next_send(0.5) is None and p.due(0.5) == pytest.approx(0.5)
    send = p.next_send(1.0)
    assert send is not None and send.text == ">> Me: hello there\n>> Them: hi"


def test_obs_not_streaming_drops_the_caption() -> None:
    """Captions OBS cannot put in a stream (not live) are dropped and counted, not retried."""
    p = core.ObsPlanner(spec("obs"))
    p.offer(msg("a", "one"), now=0.0)
    send = p.next_send(0.0)
    assert send is not None
    p.skipped(send, 0.0)
    assert not p.pending and p.status()["not_live"] == 1


def test_obs_auth_matches_the_protocol() -> None:
    """authentication = base64(sha256(base64(sha256(password + salt)) + challenge))."""
    import base64

    secret = base64.b64encode(hashlib.sha256(b"pw" + b"salt").digest())
    want = base64.b64encode(hashlib.sha256(secret + b"chal").digest()).decode()
    assert core.obs_auth("pw", "salt", "chal") == want


# -- YouTube ------------------------------------------------------------------------------------


def test_youtube_syncs_the_clock_then_posts_cues_with_rising_seq() -> None:
    """An empty first POST sets the clock offset; cues carry corrected times; seq rises by one
    per new post and stays the same on a retry."""
    p = core.YouTubePlanner(spec("youtube"))
    wall = 1_700_000_000.0
    first = p.next_send(0.0, wall)
    assert first is not None and first.body == b"" and first.query == (("seq", "1"),)
    p.sent(first, 0.1, wall + 0.1, b"2023-11-14T22:15:20.050\n", sent_wall=wall)
    assert p.offset_s == pytest.approx(120.0, abs=0.01)  # 22:13:20.050 + 120 s
    p.offer(msg("a", "hello world", speaker="Ann"), now=1.0, wall=wall + 1)
    send = p.next_send(2.0, wall + 2)
    assert send is not None and send.query == (("seq", "2"),)
    assert send.body == b"2023-11-14T22:15:21.000 region:reg1#cue1\nAnn: hello world\n"
    p.failed(send, 2.0, 0.0)
    assert p.next_send(2.2, wall + 2.2) is None  # backing off
    retry = p.next_send(3.0, wall + 3)
    assert retry == send
    p.sent(retry, 3.1, wall + 3.1, b"garbage")
    p.offer(msg("b", "again"), now=4.0, wall=wall + 4)
    assert p.next_send(5.0, wall + 5).query == (("seq", "3"),)  # type: ignore[union-attr]


def test_youtube_backlog_stays_within_the_servers_window() -> None:
    """Lines held back by an outage are sent together, stamped no older than the server
    accepts and never going backwards."""
    p = core.YouTubePlanner(spec("youtube"))
    p.offset_s = 0.0
    for i in range(30):
        p.offer(msg(f"i{i}", f"line {i}"), now=float(i), wall=1000.0 + i * 10)
    send = p.next_send(400.0, 1400.0)
    assert send is not None and send.lines == core.YOUTUBE_MAX_CUES
    stamps = [line for line in send.body.decode().split("\n") if "region" in line]
    assert stamps[0].startswith(core.youtube_time(1400.0 - core.YOUTUBE_MAX_AGE_S)[:19])
    assert stamps == sorted(stamps)


# -- Zoom, webhook, bounds ---------------------------------------------------------------------


def test_zoom_continues_the_meetings_sequence() -> None:
    """Zoom's last seq is asked first; posts go on from it with lang; retries keep the seq."""
    p = core.ZoomPlanner(spec("zoom", lang="de-DE"))
    ask = p.next_send(0.0)
    assert ask is not None and ask.op == "get" and ask.path == "/seq"
    p.sent(ask, 0.0, answer=b"41")
    p.offer(msg("a", "Guten Tag"), now=1.0)
    p.offer(msg("b", "zusammen"), now=1.0)
    send = p.next_send(1.0)
    assert send is not None and send.query == (("seq", "42"), ("lang", "de-DE"))
    assert send.body == "Guten Tag\nzusammen\n".encode()
    p.failed(send, 1.0, 1.0)
    assert p.next_send(1.0 + core.BACKOFF_FIRST_S) == send
    p.sent(send, 3.0)
    p.offer(msg("c", "weiter"), now=4.0)
    assert p.next_send(4.0).query[0] == ("seq", "43")  # type: ignore[union-attr]


def test_webhook_body_and_signature() -> None:
    """One JSON POST per final with session, item, times, speaker, track; HMAC-SHA256 header."""
    p = core.WebhookPlanner(spec("webhook"), key="k3y")
    p.offer(msg("a", "hola", speaker="Ana", track="es"), now=0.0)  # another track: ignored
    p.offer(msg("b", "hello", speaker="Ana"), now=0.0)
    send = p.next_send(0.0)
    assert send is not None
    body = json.loads(send.body)
    assert body == {"type": "line", "session": 7, "item_id": "b", "channel": "", "track":
                    "original", "speaker": "Ana", "start_ms": 1000, "end_ms": 2500,
                    "text": "hello"}
    want = "sha256=" + hmac.new(b"k3y", send.body, hashlib.sha256).hexdigest()
    assert dict(send.headers)[core.SIGNATURE_HEADER] == want


def test_pending_is_bounded_and_backoff_is_capped() -> None:
    """Past MAX_PENDING the oldest lines are dropped and counted; retry delays double with
    jitter up to BACKOFF_MAX_S."""
    p = core.WebhookPlanner(spec("webhook"))
    for i in range(core.MAX_PENDING["webhook"] + 5):
        p.offer(msg(f"i{i}", "x"), now=0.0)
    assert len(p.pending) == core.MAX_PENDING["webhook"] and p.dropped == 5
    p.offer(msg("i9", "x"), now=0.0)  # a line seen again is not sent twice
    assert p.dropped == 5
    assert core.backoff_s(1, 1.0) == core.BACKOFF_FIRST_S
    assert core.backoff_s(3, 0.0) == 2.0
    assert core.backoff_s(50, 1.0) == core.BACKOFF_MAX_S


def test_obs_skips_captions_too_old_for_a_live_stream() -> None:
    """After OBS was unreachable, captions older than OBS_MAX_AGE_S are skipped (counted as
    stale) and the newest are sent."""
    p = core.ObsPlanner(spec("obs", speakers=False))
    p.offer(msg("a", "said long ago " * 4), now=0.0)
    p.offer(msg("b", "said just now"), now=core.OBS_MAX_AGE_S + 5)
    send = p.next_send(core.OBS_MAX_AGE_S + 5)
    assert send is not None and send.text.endswith("now") and send.lines == 1
    assert p.status()["stale"] >= 1 and len(p.pending) == 1

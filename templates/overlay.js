// captiond caption overlay client.
//
// Connects to /ws on the page's own server (with the page's ?token=), keeps the current lines,
// and renders them as broadcast-style roll-up captions: the visible text of the recent lines is
// wrapped at word boundaries into rows of at most max_chars characters, and only the last
// max_lines rows are shown. Rows are reused elements whose text changes in place, so partial
// updates never flicker. Reconnects by itself with exponential backoff and jitter; every
// connection starts with {"type":"hello"} and a snapshot, which replaces what was shown.
(function () {
  "use strict";

  var BACKOFF_MIN_MS = 500;
  var BACKOFF_MAX_MS = 10000;
  var MAX_LINES_KEPT = 200;       // lines remembered at most, whatever the feed sends
  var MAX_TEXT_CHARS = 4000;      // longest line text rendered
  var PARTIAL_STALE_MS = 30000;   // a partial not updated this long is dropped (engine gone)

  var opts = JSON.parse(document.getElementById("cap-options").textContent);
  var params = new URLSearchParams(window.location.search);
  var token = params.get("token");
  var root = document.getElementById("cap");
  var panesEl = root.querySelector(".panes");

  var lines = new Map();          // key -> line state
  var arrival = 0;                // tie-breaker for ordering
  var panes = new Map();          // track -> {el, box, rows, rowEls, firstRow, key}
  var renderQueued = false;
  var expiryTimer = null;
  var backoff = BACKOFF_MIN_MS;
  var socket = null;
  var stats = { messages: 0, connects: 0, renders: 0 };

  function lineKey(m) {
    return m.track + "\u0000" + (m.channel || "") + "\u0000" + m.item_id;
  }

  function now() { return performance.now(); }

  function apply(m) {
    if (m.type === "hello") {
      lines.clear();
      return;
    }
    if (m.type === "reload") {
      window.location.reload();
      return;
    }
    if (m.type === "session") {
      if (m.event === "started") lines.clear();
      return;
    }
    if (m.type !== "line") return;
    var key = lineKey(m);
    if (m.event === "removed") {
      lines.delete(key);
      return;
    }
    var prev = lines.get(key);
    var done = m.status !== "partial";
    var finalAt = null;
    if (done) {
      finalAt = prev && prev.finalAt !== null ? prev.finalAt : now() - (m.age_ms || 0);
    }
    lines.set(key, {
      track: m.track || "original",
      session: m.session == null ? 0 : m.session,
      start: m.start_ms || 0,
      seq: m.seq || 0,
      order: prev ? prev.order : arrival++,
      speaker: m.speaker || "",
      text: String(m.text || "").slice(0, MAX_TEXT_CHARS),
      stable: m.stable || 0,
      done: done,
      finalAt: finalAt,
      updatedAt: now() - (m.age_ms || 0),
    });
    if (lines.size > MAX_LINES_KEPT) {
      var oldest = sortedLines()[0];
      lines.delete(oldest.key);
    }
  }

  function sortedLines() {
    var out = [];
    lines.forEach(function (line, key) { line.key = key; out.push(line); });
    out.sort(function (a, b) {
      return a.session - b.session || a.start - b.start || a.seq - b.seq || a.order - b.order;
    });
    return out;
  }

  // The text of a line as shown: everything in live mode; in stable mode finals and the
  // stable prefix of partials, cut back to a word boundary so half words never appear.
  function visibleText(line) {
    var text = line.text;
    if (opts.mode === "stable" && !line.done) {
      var prefix = text.slice(0, Math.max(0, Math.min(line.stable, text.length)));
      if (prefix.length < text.length && !/\s/.test(text.charAt(prefix.length))) {
        var cut = prefix.search(/\s\S*$/);
        prefix = cut >= 0 ? prefix.slice(0, cut) : "";
      }
      text = prefix;
    }
    return text.replace(/\s+/g, " ").trim();
  }

  // Greedy word wrap into rows of at most maxChars; a word longer than a row is split.
  function wrapInto(rows, words, maxChars, partial) {
    var current = rows.length && !rows[rows.length - 1].closed ? rows.pop() : null;
    words.forEach(function (word) {
      while (word.length > maxChars) {
        if (current) rows.push(current);
        rows.push({ text: word.slice(0, maxChars), partial: partial });
        word = word.slice(maxChars);
        current = null;
      }
      if (!word) return;
      if (current && current.text.length + 1 + word.length <= maxChars) {
        current.text += " " + word;
        current.partial = current.partial || partial;
      } else {
        if (current) rows.push(current);
        current = { text: word, partial: partial };
      }
    });
    if (current) rows.push(current);
  }

  function tracksToShow(all) {
    if (opts.lang !== "both") return [opts.lang];
    var other = null;
    all.forEach(function (line) {
      if (other === null && line.track !== "original") other = line.track;
    });
    return other === null ? ["original"] : ["original", other];
  }

  function pane(track) {
    var p = panes.get(track);
    if (p) return p;
    var el = document.createElement("div");
    el.className = "pane empty";
    el.dataset.track = track;
    var box = document.createElement("div");
    box.className = "box";
    var rows = document.createElement("div");
    rows.className = "rows";
    box.appendChild(rows);
    el.appendChild(box);
    panesEl.appendChild(el);
    p = { el: el, rows: rows, rowEls: [], firstRow: 0, signature: [] };
    panes.set(track, p);
    return p;
  }

  function expire(t) {
    var next = null;
    lines.forEach(function (line, key) {
      var until = line.finalAt === null ? line.updatedAt + PARTIAL_STALE_MS
                                        : line.finalAt + opts.linger_ms;
      if (until <= t) {
        lines.delete(key);
      } else if (next === null || until < next) {
        next = until;
      }
    });
    if (expiryTimer !== null) clearTimeout(expiryTimer);
    expiryTimer = next === null ? null : setTimeout(queueRender, Math.max(0, next - t) + 5);
  }

  function render() {
    renderQueued = false;
    stats.renders++;
    expire(now());
    var all = sortedLines();
    var show = tracksToShow(all);
    panes.forEach(function (p, track) {
      p.el.hidden = show.indexOf(track) < 0;
    });
    show.forEach(function (track) {
      var rows = [];
      var lastSpeaker = null;
      all.forEach(function (line) {
        if (line.track !== track) return;
        var text = visibleText(line);
        if (!text) return;
        var words = text.split(" ");
        if (opts.speakers && line.speaker && line.speaker !== lastSpeaker) {
          if (rows.length) rows[rows.length - 1].closed = true;
          words.unshift(line.speaker + ":");
        }
        if (line.speaker) lastSpeaker = line.speaker;
        wrapInto(rows, words, opts.max_chars, !line.done);
      });
      paint(pane(track), rows);
    });
    root.dataset.renders = String(stats.renders);
  }

  // Show the last max_lines rows, reusing row elements; roll up smoothly when text scrolls.
  function paint(p, rows) {
    var first = Math.max(0, rows.length - opts.max_lines);
    var visible = rows.slice(first);
    var shift = 0;
    if (first > p.firstRow && p.signature.length) {
      // Rows scrolled off the top: start the new rows where the old ones were, glide up.
      shift = Math.min(first - p.firstRow, visible.length);
    }
    while (p.rowEls.length < visible.length) {
      var el = document.createElement("div");
      el.className = "row";
      p.rows.appendChild(el);
      p.rowEls.push(el);
    }
    while (p.rowEls.length > visible.length) {
      p.rows.removeChild(p.rowEls.pop());
    }
    visible.forEach(function (row, i) {
      var el = p.rowEls[i];
      if (el.textContent !== row.text) el.textContent = row.text;
      el.classList.toggle("partial", !!row.partial);
    });
    p.el.classList.toggle("empty", visible.length === 0);
    if (shift > 0 && p.rowEls.length) {
      var height = p.rowEls[0].offsetHeight;
      p.rows.classList.remove("rolling");
      p.rows.style.transform = "translateY(" + shift * height + "px)";
      void p.rows.offsetHeight; // commit the start position before animating to 0
      p.rows.classList.add("rolling");
      p.rows.style.transform = "";
    }
    p.firstRow = first;
    p.signature = visible.map(function (r) { return r.text; });
  }

  function queueRender() {
    if (renderQueued) return;
    renderQueued = true;
    // requestAnimationFrame batches a burst of updates into one paint; the timeout covers
    // hidden pages (OBS sources not on screen), where animation frames pause.
    var done = false;
    var run = function () { if (!done) { done = true; render(); } };
    window.requestAnimationFrame(run);
    setTimeout(run, 100);
  }

  function connect() {
    var url = new URL("/ws", window.location.href);
    url.protocol = window.location.protocol === "https:" ? "wss:" : "ws:";
    url.search = "";
    if (token) url.searchParams.set("token", token);
    try {
      socket = new WebSocket(url.toString());
    } catch (err) {
      retry();
      return;
    }
    socket.onopen = function () {
      backoff = BACKOFF_MIN_MS;
      stats.connects++;
      root.dataset.connected = "1";
      root.dataset.connects = String(stats.connects);
    };
    socket.onmessage = function (event) {
      var m;
      try { m = JSON.parse(event.data); } catch (err) { return; }
      if (!m || typeof m !== "object") return;
      stats.messages++;
      apply(m);
      queueRender();
    };
    socket.onclose = function () {
      root.dataset.connected = "0";
      socket = null;
      retry();
    };
  }

  function retry() {
    // Full jitter between half and all of the current backoff, so restarted daemons are not
    // hit by every overlay at the same instant.
    var delay = backoff * (0.5 + Math.random() * 0.5);
    backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
    setTimeout(connect, delay);
  }

  window.captiond = {
    stats: stats,
    text: function (track) {
      var p = panes.get(track || "original");
      return p ? p.rowEls.map(function (el) { return el.textContent; }) : [];
    },
  };
  connect();
})();

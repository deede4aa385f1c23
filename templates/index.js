// captiond overlay index: puts the visitor's own ?token= into the links and the preview (the
// server never renders a token into a page), and refreshes the status table.
(function () {
  "use strict";
  var STATUS_REFRESH_MS = 2000;
  var token = new URLSearchParams(window.location.search).get("token");

  function withToken(base, query) {
    var params = new URLSearchParams(query || "");
    if (token) params.set("token", token);
    var q = params.toString();
    return base + (q ? "?" + q : "");
  }

  document.querySelectorAll("[data-overlay-url]").forEach(function (el) {
    if (token) el.textContent = withToken(el.dataset.overlayUrl, el.dataset.query);
  });
  var preview = document.getElementById("preview");
  if (preview) {
    preview.src = withToken(preview.dataset.src, "");
    var CANVAS_WIDTH_PX = 1920;
    var fit = function () {
      var scale = preview.parentElement.clientWidth / CANVAS_WIDTH_PX;
      preview.style.transform = "scale(" + scale + ")";
    };
    fit();
    window.addEventListener("resize", fit);
  }

  function refresh() {
    fetch(withToken("/status", ""), { cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (status) {
        if (!status) return;
        var table = document.getElementById("status");
        Object.keys(status).forEach(function (key) {
          var cell = table.querySelector('td[data-key="' + CSS.escape(key) + '"]');
          if (!cell) {
            var row = table.insertRow();
            var th = document.createElement("th");
            th.textContent = key;
            row.appendChild(th);
            cell = row.insertCell();
            cell.dataset.key = key;
          }
          cell.textContent = String(status[key]);
        });
      })
      .catch(function () {});
  }
  setInterval(refresh, STATUS_REFRESH_MS);

  // The minutes of the newest completed session (text only: every value goes in as
  // textContent, so nothing from a transcript or a model can become markup).
  var MINUTES_ITEMS = 12;
  function el(tag, text) {
    var e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function at(cites) {
    return (cites || []).map(function (c) { return " [" + c.at + "]"; }).join("");
  }
  function list(title, items, line) {
    if (!items || !items.length) return null;
    var box = el("div");
    box.appendChild(el("h3", title));
    var ul = el("ul");
    items.slice(0, MINUTES_ITEMS).forEach(function (it) { ul.appendChild(el("li", line(it))); });
    box.appendChild(ul);
    return box;
  }
  function showMinutes() {
    var json = function (r) { return r.ok ? r.json() : null; };
    fetch(withToken("/api/sessions", "limit=10"), { cache: "no-store" })
      .then(json)
      .then(function (data) {
        var done = data && data.sessions.filter(function (s) { return s.status === "completed"; });
        if (!done || !done.length) return null;
        return fetch(withToken("/api/sessions/" + done[0].id + "/minutes", ""),
                     { cache: "no-store" }).then(json).then(function (m) {
          return m && { session: done[0], minutes: m.minutes };
        });
      })
      .then(function (got) {
        if (!got) return;
        var m = got.minutes;
        document.getElementById("minutes-about").textContent =
          (got.session.title || "Session " + got.session.id) + " · " +
          (m.source === "openai" ? "written by " + m.model + " ($" + m.cost_usd.toFixed(4) + ")"
                                 : "made offline");
        var body = document.getElementById("minutes-body");
        body.textContent = "";
        [list("Summary", m.summary, function (s) { return s.text + at(s.cites); }),
         list("Topics", m.topics, function (t) {
           return t.title + " — " + t.summary + at(t.cites); }),
         list("Decisions", m.decisions, function (d) { return d.text + at(d.cites); }),
         list("Action items", m.actions, function (a) {
           return (a.owner ? a.owner + ": " : "") + a.task +
             (a.due ? " (due: " + a.due + ")" : "") + at(a.cites); }),
         list("Open questions", m.questions, function (q) { return q.text + at(q.cites); })
        ].forEach(function (box) { if (box) body.appendChild(box); });
        document.getElementById("minutes").hidden = false;
      })
      .catch(function () {});
  }
  showMinutes();
})();

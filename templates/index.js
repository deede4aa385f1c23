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
})();

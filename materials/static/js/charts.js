/* Draw every server-built plotly figure on the page, and wire the raw/standardized toggle.
 * Figures sit in <script type="application/json" id="…-data"> next to a <div data-chart="…-data">;
 * plotly.js is the local copy served from the plotly package (no CDN). */
(function () {
  "use strict";
  var config = { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["select2d", "lasso2d"] };

  function draw(div) {
    var source = document.getElementById(div.getAttribute("data-chart"));
    if (!source || typeof Plotly === "undefined") return;
    var figure = JSON.parse(source.textContent);
    var loading = div.querySelector(".chart-loading");
    if (loading) loading.remove();
    Plotly.newPlot(div, figure.data, figure.layout, config).then(function () {
      div.setAttribute("data-rendered", "true");
    });
  }

  function toggle(button) {
    var div = document.getElementById(button.getAttribute("data-chart-toggle"));
    if (!div || !div.layout || !div.layout.meta) return;
    var group = button.getAttribute("data-group");
    var meta = div.layout.meta;
    var visible = meta.groups.map(function (g) { return g === group; });
    var titles = meta.titles[group] || {};
    Plotly.update(div, { visible: visible }, { "xaxis.title.text": titles.x, "yaxis.title.text": titles.y, "xaxis.autorange": true, "yaxis.autorange": true });
    document.querySelectorAll('[data-chart-toggle="' + div.id + '"]').forEach(function (other) {
      other.setAttribute("aria-pressed", other === button ? "true" : "false");
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-chart]").forEach(draw);
    document.querySelectorAll("[data-chart-toggle]").forEach(function (button) {
      button.addEventListener("click", function () { toggle(button); });
    });
  });
})();

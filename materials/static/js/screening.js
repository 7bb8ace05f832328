/* Live progress of one screening: poll its status JSON until it finishes, then reload
 * the page once so the final ranking appears (and once when stage 1's ranking first exists). */
(function () {
  "use strict";
  var panel = document.getElementById("screening-status");
  if (!panel || panel.getAttribute("data-finished") === "true") return;
  var url = panel.getAttribute("data-status-url");
  var field = function (name) { return panel.querySelector('[data-field="' + name + '"]'); };
  var delay = 2000;

  function renderStages(stages) {
    var body = document.querySelector("#stage-table tbody");
    if (!body || !stages.length) return;
    body.innerHTML = "";
    stages.forEach(function (stage) {
      var row = document.createElement("tr");
      var label = document.createElement("td");
      label.textContent = stage.label;
      var count = document.createElement("td");
      count.className = "num";
      count.textContent = stage.count;
      row.appendChild(label);
      row.appendChild(count);
      body.appendChild(row);
    });
  }

  function poll() {
    fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" })
      .then(function (response) { if (!response.ok) throw new Error(response.status); return response.json(); })
      .then(function (state) {
        var status = field("status");
        status.textContent = state.status;
        status.className = "status " + state.status;
        field("progress").value = state.progress;
        field("message").textContent =
          state.status === "pending" ? "Waiting for a worker…" : state.progress_message || "Running…";
        var error = field("error");
        error.hidden = !state.error;
        error.textContent = state.error || "";
        renderStages(state.stages || []);
        var two = state.stage_two || { jobs: 0, finished: 0, fraction: 0 };
        var bar = field("stage-two");
        if (bar) bar.value = two.fraction;
        var text = field("stage-two-text");
        if (text) text.textContent = two.finished + " of " + two.jobs + " spectra";
        var ranking = document.getElementById("ranking");
        if (!ranking && state.stage_counts && state.stage_counts.ranked) { window.location.reload(); return; }
        if (state.finished) { window.location.reload(); return; }
        delay = 2000;
        window.setTimeout(poll, delay);
      })
      .catch(function () { delay = Math.min(delay * 2, 30000); window.setTimeout(poll, delay); });
  }
  window.setTimeout(poll, delay);
})();

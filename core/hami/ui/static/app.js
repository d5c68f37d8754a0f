// hami dashboard: live updates and the simulation chart. Plain browser JavaScript, no build step.
"use strict";
(function () {
  const page = document.body.dataset.page;

  // ---- filters: a change reloads the page with the new query (the form also works without JavaScript)
  const form = document.getElementById("filters");
  if (form) {
    form.addEventListener("change", function () {
      const query = new URLSearchParams();
      for (const select of form.querySelectorAll("select")) if (select.value) query.set(select.name, select.value);
      const text = query.toString();
      window.location.search = text ? "?" + text : "";
    });
  }

  // ---- live updates: the server sends the cluster's version; the page swaps in a fresh fragment
  const content = document.getElementById("content");
  const live = document.getElementById("live");
  let shown = content ? content.dataset.version : null;
  let fetching = false, again = false;

  function refresh() {
    if (fetching) { again = true; return; }
    fetching = true;
    fetch("/fragment/" + page + window.location.search, { cache: "no-store" })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.text(); })
      .then(function (html) {
        content.innerHTML = html;
        const stamp = document.getElementById("generated");
        if (stamp) stamp.textContent = new Date().toISOString().replace(/\.\d+Z$/, "Z");
        content.dispatchEvent(new CustomEvent("hami:updated"));
      })
      .catch(function () { if (live) { live.textContent = "update failed"; live.className = "live off"; } })
      .finally(function () { fetching = false; if (again) { again = false; refresh(); } });
  }

  if (content && page !== "simulation") {
    if (window.EventSource) {
      const source = new EventSource("/events");
      source.addEventListener("version", function (e) {
        if (live) { live.textContent = "live"; live.className = "live on"; }
        if (e.data !== shown) { shown = e.data; content.dataset.version = e.data; refresh(); }
      });
      source.onerror = function () { if (live) { live.textContent = "reconnecting"; live.className = "live off"; } };
    } else {
      setInterval(refresh, 5000);  // browsers without server-sent events poll
    }
  }

  // ---- simulation: allocation curves per policy from `hami simulate --json` lines
  if (page === "simulation") {
    const error = document.getElementById("sim-error");
    const table = document.getElementById("sim-table");
    let chart = null;

    function fail(message) { error.textContent = message; error.hidden = false; }

    function parse(text) {
      const runs = [];
      text.split(/\r?\n/).forEach(function (line, i) {
        if (!line.trim()) return;
        let run;
        try { run = JSON.parse(line); } catch (e) { throw new Error("line " + (i + 1) + " is not JSON: " + line.slice(0, 80)); }
        if (typeof run !== "object" || run === null || typeof run.policy !== "string" || !Array.isArray(run.alloc_at_arrived))
          throw new Error("line " + (i + 1) + " is not a 'hami simulate --json' run (needs policy and alloc_at_arrived)");
        runs.push(run);
      });
      return runs;
    }

    function draw(runs) {
      error.hidden = true;
      const byPolicy = new Map();
      for (const run of runs) {
        if (!byPolicy.has(run.policy)) byPolicy.set(run.policy, []);
        byPolicy.get(run.policy).push(run);
      }
      const length = Math.max(0, ...runs.map(function (r) { return r.alloc_at_arrived.length; }));
      const labels = Array.from({ length: length }, function (_, i) { return i; });
      const colours = ["#2b5fd9", "#cf3b3b", "#2e9d5b", "#d99a1e", "#7a4cc2", "#1e9bb3", "#b34a86", "#5c6578"];
      const datasets = [];
      const body = table.querySelector("tbody");
      body.textContent = "";
      let n = 0;
      for (const [policy, list] of byPolicy) {
        const mean = labels.map(function (i) {
          const values = list.map(function (r) { return r.alloc_at_arrived[i]; }).filter(function (v) { return typeof v === "number"; });
          return values.length ? values.reduce(function (a, b) { return a + b; }, 0) / values.length : null;
        });
        const at100 = list.reduce(function (a, r) { return a + (r.alloc_at_100 || 0); }, 0) / list.length;
        datasets.push({ label: policy + " (" + at100.toFixed(2) + " % at 100 %)", data: mean, borderColor: colours[n % colours.length],
                        backgroundColor: colours[n % colours.length], pointRadius: 0, borderWidth: 2, tension: 0.1 });
        const row = body.insertRow();
        row.dataset.policy = policy;
        for (const cell of [policy, list.map(function (r) { return r.seed; }).join(", "), at100.toFixed(2) + " %",
                            list.reduce(function (a, r) { return a + (r.placed || 0); }, 0),
                            list.reduce(function (a, r) { return a + (r.failed || 0); }, 0)]) row.insertCell().textContent = String(cell);
        n++;
      }
      datasets.push({ label: "arrived", data: labels, borderColor: "#9aa3b5", borderDash: [4, 4], pointRadius: 0, borderWidth: 1 });
      table.hidden = runs.length === 0;
      if (chart) chart.destroy();
      chart = new window.Chart(document.getElementById("sim-chart"), {
        type: "line",
        data: { labels: labels, datasets: datasets },
        options: {
          animation: false, responsive: true, interaction: { mode: "index", intersect: false },
          scales: {
            x: { title: { display: true, text: "arrived workload (% of cluster device capacity)" }, ticks: { maxTicksLimit: 14 } },
            y: { min: 0, max: 100, title: { display: true, text: "allocated (% of cluster device capacity)" } },
          },
          plugins: { legend: { position: "bottom" } },
        },
      });
      document.body.dataset.plotted = String(byPolicy.size);
    }

    const embedded = JSON.parse(document.getElementById("sim-data").textContent || "[]");
    if (embedded.length) draw(embedded);
    document.getElementById("sim-file").addEventListener("change", function (e) {
      const file = e.target.files[0];
      if (!file) return;
      file.text().then(function (text) {
        try { draw(parse(text)); } catch (err) { fail(err.message); }
      });
    });
  }
})();

// The job page: live status while the job runs, the result (video, chart, downloads) once it has ended.
(function () {
  "use strict";
  const G = window.Gedge;
  const { el, fmt } = G;
  const initial = JSON.parse(document.getElementById("gedge-initial").textContent);
  const jobId = initial.job.id;
  const store = new G.VersionStore();
  let job = initial.job;
  const $ = (id) => document.getElementById(id);
  const resultsShown = Boolean($("results"));

  const timelines = new G.TimelineCache(() => drawHistory(), () => job);
  timelines.seed(jobId, job.status, initial.timelines[jobId] || []);

  function drawHistory() {
    const events = timelines.get(jobId);
    G.renderStepper($("job-timeline"), job, events);
    $("events").tBodies[0].replaceChildren(...events.map((e) => el("tr", {},
      el("td", { text: fmt.dateTime(e.at) }), el("td", { text: e.from_status }), el("td", { text: e.to_status }),
      el("td", { text: String(e.iteration) }), el("td", { text: e.message }))));
  }

  function draw() {
    const badge = $("job-status");
    badge.className = `badge s-${job.status}`;
    badge.textContent = job.status;
    $("job-stage").textContent = G.stageText(job);
    $("job-progress").value = job.progress;
    $("job-iteration").textContent = String(job.iteration);
    $("job-frames").textContent = String(job.frame_count);
    $("job-started").textContent = fmt.dateTime(job.started_at);
    $("job-ended").textContent = fmt.dateTime(job.ended_at);
    $("job-duration").textContent = fmt.duration(G.durationMs(job, Date.now()));
    const failed = job.error && job.status !== "Exit";
    $("job-error").hidden = !failed;
    $("job-error-text").textContent = job.error || "";
    $("cancel-btn").hidden = G.TERMINAL.has(job.status);
    $("retry-btn").hidden = !["Failed", "Cancelled"].includes(job.status);
  }

  function apply(next) {
    if (next.id !== jobId || !store.accept(next)) return false;
    const before = job.status;
    job = next;
    draw();
    drawHistory();
    timelines.refresh(job);
    // The result section is rendered by the server; fetch it once the results exist.
    if (job.status === "Exit" && before !== "Exit" && !resultsShown) location.reload();
    return true;
  }
  window.gedgeApply = apply;

  store.accept(job);
  draw();
  drawHistory();
  setInterval(() => { if (!G.TERMINAL.has(job.status)) $("job-duration").textContent = fmt.duration(G.durationMs(job, Date.now())); }, 1000);

  G.connectJobs({
    // A staff snapshot may not reach back to an old job: read this one from the API on every (re)connect.
    onSnapshot: (jobs) => {
      const mine = jobs.find((j) => j.id === jobId);
      if (mine) apply(mine);
      else G.fetchJSON(`/api/jobs/${jobId}/`).then(apply, () => {});
    },
    onUpdate: apply,
  });

  for (const button of document.querySelectorAll("button[data-action]")) {
    button.addEventListener("click", async () => {
      const action = button.dataset.action;
      if (action === "cancel" && !confirm("Cancel this job? A running stage stops at its next batch.")) return;
      $("action-error").textContent = "";
      button.setAttribute("aria-busy", "true");
      try {
        apply(await G.fetchJSON(`/api/jobs/${jobId}/${action}/`, {
          method: "POST", headers: { Accept: "application/json", "X-CSRFToken": G.csrfToken() },
        }));
      } catch (err) {
        $("action-error").textContent = `Could not ${action}: ${err.message}`;
      } finally {
        button.removeAttribute("aria-busy");
      }
    });
  }

  // --- the chart: objects per frame for each class over the video's time; a click seeks the player ---

  const chartBox = $("chart");
  if (chartBox && window.uPlot) {
    G.fetchJSON(chartBox.dataset.src).then((data) => drawChart(chartBox, data)).catch((err) => {
      $("chart-note").textContent = `The chart could not be loaded: ${err.message}`;
    });
  }

  // The same hue per class as the boxes drawn into the video (stages/postprocess.py class_color).
  function classColor(classId) {
    if (classId == null) return "hsl(0, 0%, 55%)";
    return `hsl(${((classId * 47) % 180) * 2}, 85%, 45%)`;
  }

  function drawChart(box, data) {
    const player = $("player");
    const width = () => Math.max(280, box.clientWidth);
    const options = {
      width: width(), height: 260,
      scales: { x: { time: false } },
      axes: [{ label: "time (s)" }, { label: "objects per frame" }],
      series: [{ label: "t (s)", value: (u, v) => (v == null ? "" : v.toFixed(2)) },
        ...data.series.map((s) => ({ label: `${s.class} (${s.total})`, stroke: classColor(s.class_id), width: 2 }))],
      cursor: { drag: { x: false, y: false } },
    };
    const plot = new uPlot(options, [data.t, ...data.series.map((s) => s.values)], box);
    box.dataset.series = data.series.map((s) => s.class).join(",");
    $("chart-note").textContent = data.bucket_frames > 1
      ? `Each point is the mean over ${data.bucket_frames} frames. Click to jump the video there.`
      : "One point per frame. Click to jump the video there.";
    if (player) {
      plot.over.addEventListener("click", () => {
        const t = plot.posToVal(plot.cursor.left, "x");
        if (Number.isFinite(t)) player.currentTime = Math.max(0, t);
      });
    }
    new ResizeObserver(() => plot.setSize({ width: width(), height: 260 })).observe(box);
  }
})();

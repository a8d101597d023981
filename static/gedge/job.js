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

  // The history: the job's own status changes in the table (the timeline cache re-reads them on each one);
  // its segments' (several per segment) in a collapsed list under it, so a long video's hundreds of them do
  // not bury the eight that tell the story. That list is re-read while it is open and once the job has ended;
  // while it is closed and the job moves, its count is left out rather than shown out of date.
  let segmentEvents = initial.segmentEvents || [];
  let segmentEventsFresh = true;
  let segmentEventsDrawn = null; // [count, last id] of the list drawn, to leave an unchanged one alone
  function drawHistory() {
    // The stepper reads status changes only; the table lists notes too (a counting line added: no new status).
    const own = timelines.get(jobId).filter((e) => e.segment == null);
    G.renderStepper($("job-timeline"), job, G.jobEvents(own));
    $("events").tBodies[0].replaceChildren(...own.map((e) => el("tr", {},
      el("td", { text: fmt.dateTime(e.at) }), el("td", { text: e.from_status }), el("td", { text: e.to_status }),
      el("td", { text: String(e.iteration) }), el("td", { text: e.message }))));
    drawSegmentEvents();
  }

  function drawSegmentEvents() {
    const box = $("segment-events-box");
    box.hidden = !segmentEvents.length && !job.segment_count;
    $("segment-event-count").textContent = segmentEventsFresh ? ` (${segmentEvents.length})` : "";
    const last = segmentEvents.length ? segmentEvents[segmentEvents.length - 1].id : null;
    if (segmentEventsDrawn && segmentEventsDrawn[0] === segmentEvents.length && segmentEventsDrawn[1] === last) return;
    segmentEventsDrawn = [segmentEvents.length, last];
    $("segment-events").tBodies[0].replaceChildren(...segmentEvents.map((e) => el("tr", {},
      el("td", { text: fmt.dateTime(e.at) }), el("td", { class: "num", text: String(e.segment) }),
      el("td", { text: e.from_status }), el("td", { text: e.to_status }), el("td", { text: String(e.iteration) }),
      el("td", { text: e.message }))));
  }

  function readSegmentEvents() {
    return G.fetchEvents(jobId, { segments: true }).then((events) => {
      segmentEvents = events.filter((e) => e.segment != null);
      segmentEventsFresh = true;
      drawSegmentEvents();
    }, () => { /* the next read tries again */ });
  }
  $("segment-events-box").addEventListener("toggle", (e) => { if (e.target.open) readSegmentEvents(); });

  // --- segments: a cell per segment with a bar per stage, re-read from /segments/ when the job changes ---

  const PHASE = {
    Enqueue: "waiting", Preprocessing_complete: "waiting", Inferencing_complete: "waiting",
    Preprocessing: "running", Inferencing: "running", Postprocessing: "running",
    Postprocessing_complete: "done", Failed: "failed", Cancelled: "cancelled",
  };
  const RUNS = { Preprocessing: "preprocess", Inferencing: "inference", Postprocessing: "postprocess" };
  const SHORT = { preprocess: "pre", inference: "inf", postprocess: "post" };
  let segments = initial.segments || [];

  function segmentText(s) {
    const last = s.first_frame + s.frame_count - 1;
    const stages = G.STAGES.map((stage) => {
      const ms = (s.stage_ms || {})[stage];
      return `${stage} ${Math.min(s[stage + "_done"], s.frame_count)}/${s.frame_count}${ms != null ? ` (${fmt.duration(ms)})` : ""}`;
    });
    return `Segment ${s.index}: frames ${s.first_frame}–${last} (${s.frame_count}) from ${s.start_s.toFixed(2)} s · `
      + `${s.status} · ${stages.join(", ")} · iteration ${s.iteration}`;
  }

  function buildSegment() {
    return el("li", { class: "seg" }, el("span", { class: "seg-n", "aria-hidden": "true" }),
      ...G.STAGES.map((stage) => el("span", { class: "seg-bar", "data-stage": stage }, el("span", { class: "fill" }))),
      el("span", { class: "sr-only" }));
  }

  function drawSegments() {
    const list = $("segments");
    const empty = $("segments-empty");
    empty.hidden = segments.length > 0;
    empty.textContent = G.TERMINAL.has(job.status) ? "This job has no segments."
      : "The video is cut into segments when its first stage starts.";
    while (list.children.length > segments.length) list.lastElementChild.remove();
    while (list.children.length < segments.length) list.append(buildSegment());
    const phases = {};
    segments.forEach((s, i) => {
      const li = list.children[i];
      const phase = PHASE[s.status] || "waiting";
      phases[phase] = (phases[phase] || 0) + 1;
      if (li.dataset.index !== String(s.index)) { li.dataset.index = s.index; li.firstElementChild.textContent = s.index; }
      li.dataset.status = s.status;
      li.dataset.phase = phase;
      const text = segmentText(s);
      if (li.title !== text) { li.title = text; li.lastElementChild.textContent = text; }
      for (const bar of li.querySelectorAll(".seg-bar")) {
        const stage = bar.dataset.stage;
        const done = Math.min(s[stage + "_done"] || 0, s.frame_count);
        bar.dataset.state = s.frame_count && done >= s.frame_count ? "full" : RUNS[s.status] === stage ? "running" : "part";
        bar.firstElementChild.style.width = `${s.frame_count ? (100 * done) / s.frame_count : 0}%`;
        bar.title = `${SHORT[stage]}: ${done}/${s.frame_count}`;
      }
    });
    const order = ["done", "running", "waiting", "failed", "cancelled"];
    $("segments-summary").textContent = segments.length
      ? [`${segments.length} in all`, ...order.filter((p) => phases[p]).map((p) => `${phases[p]} ${p}`)].join(" · ")
        + (job.window && segments.length > 1 && !G.TERMINAL.has(job.status) ? ` · up to ${job.window} at once` : "")
      : "";
  }

  // Pushes come with every segment move and every progress step: the list is re-read at most once a second,
  // always once more after the last push (so a terminal status is drawn), one request at a time; the segment
  // events with it while their list is open or the job has ended.
  const SEGMENTS_EVERY_MS = 1000;
  const reads = { inFlight: null, last: 0, timer: null, again: false };
  function loadSegments() {
    clearTimeout(reads.timer);
    reads.timer = null;
    reads.last = Date.now();
    const events = $("segment-events-box").open || G.TERMINAL.has(job.status) ? readSegmentEvents() : null;
    reads.inFlight = Promise.all([G.fetchJSON(`/api/jobs/${jobId}/segments/`), events]).then(([list]) => {
      segments = Array.isArray(list) ? list : list.results;
      drawSegments();
    }, () => { /* the next push or reconnect tries again */ }).finally(() => {
      reads.inFlight = null;
      if (reads.again) { reads.again = false; wantSegments(); }
    });
    return reads.inFlight;
  }
  function wantSegments() {
    if (reads.inFlight) { reads.again = true; return; }
    if (reads.timer) return;
    const wait = reads.last + SEGMENTS_EVERY_MS - Date.now();
    if (wait > 0) reads.timer = setTimeout(loadSegments, wait);
    else loadSegments();
  }
  // The job has ended: its final segments, read now (after any read in flight) rather than at the next tick.
  function finalSegments() {
    reads.again = false;
    return Promise.resolve(reads.inFlight).then(loadSegments);
  }

  function draw() {
    const badge = $("job-status");
    badge.className = `badge s-${job.status}`;
    badge.textContent = job.status;
    $("job-stage").textContent = G.stageText(job);
    $("job-progress").value = job.progress;
    $("job-iteration").textContent = String(job.iteration);
    $("job-frames").textContent = String(job.frame_count);
    G.fillStageBars(stageBars, job);
    $("job-segments").textContent = job.segment_count ? `${job.segments_done}/${job.segment_count} done` : "";
    $("job-segments").title = job.window ? `at most ${job.window} in flight at once` : "";
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
    if (!$("segment-events-box").open) segmentEventsFresh = false;
    draw();
    drawHistory();
    timelines.refresh(job);
    // A newer version without a new status at Exit: a line or zone was added, changed or deleted (here or
    // in another tab): its note in the history, and the results' counts, are read again.
    if (job.status === "Exit" && before === "Exit") {
      G.fetchEvents(jobId).then((events) => { timelines.seed(jobId, job.status, events); drawHistory(); }, () => {});
    }
    if (G.results) G.results.update(job);
    const ended = G.TERMINAL.has(job.status) && !G.TERMINAL.has(before);
    // The result section is rendered by the server; fetch it once the results exist (after the segments'
    // last state is drawn).
    if (job.status === "Exit" && before !== "Exit" && !resultsShown) finalSegments().then(() => location.reload());
    else if (ended) finalSegments();
    else wantSegments();
    return true;
  }
  window.gedgeApply = apply;

  const stageBars = G.stageBars(true);
  $("job-stage-bars").append(stageBars);
  store.accept(job);
  draw();
  drawHistory();
  drawSegments();
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
    // Objects in view: distinct tracks per point (per frame, or over the bucket's frames), dashed; its legend
    // entry, like every series', hides it.
    const columns = [data.t, ...data.series.map((s) => s.values)];
    if (data.objects) {
      options.series.push({ label: "objects in view", stroke: "hsl(220, 10%, 40%)", width: 2, dash: [6, 4] });
      columns.push(data.objects);
    }
    const plot = new uPlot(options, columns, box);
    box.dataset.series = data.series.map((s) => s.class).join(",");
    const objects = data.objects ? " The dashed line is the objects in view: distinct tracks"
      + (data.bucket_frames > 1 ? " over those frames." : ".") : "";
    $("chart-note").textContent = (data.bucket_frames > 1
      ? `Each point is the mean over ${data.bucket_frames} frames.` : "One point per frame.")
      + `${objects} Click to jump the video there.`;
    if (player) {
      plot.over.addEventListener("click", () => {
        const t = plot.posToVal(plot.cursor.left, "x");
        if (Number.isFinite(t)) player.currentTime = Math.max(0, t);
      });
    }
    new ResizeObserver(() => plot.setSize({ width: width(), height: 260 })).observe(box);
  }
})();

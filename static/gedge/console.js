// The live console: the job table kept current by the socket, and the uploader above it.
(function () {
  "use strict";
  const G = window.Gedge;
  const { el, fmt } = G;
  const initial = JSON.parse(document.getElementById("gedge-initial").textContent);
  const rows = document.getElementById("job-rows");
  const counts = document.getElementById("job-counts");
  const columns = document.querySelectorAll("#jobs-table thead th").length;

  const jobs = new Map(); // id -> the job as shown
  const store = new G.VersionStore();
  const timelines = new G.TimelineCache((id) => { if (jobs.has(id)) drawTimeline(jobs.get(id)); }, (id) => jobs.get(id));

  // --- rows: built once per job, then updated in place (an open timeline stays open) ---

  function buildRow(job) {
    const tr = el("tr", { "data-job": job.id });
    const cell = (name, label, ...children) => el("td", { class: `c-${name}`, "data-label": label }, ...children);
    tr.append(
      cell("id", "#", el("a", { href: `/jobs/${job.id}/`, text: `#${job.id}` })),
      cell("file", "File", el("a", { class: "file-name", href: `/jobs/${job.id}/` }), el("small", { class: "muted facts-line" })),
    );
    if (G.config.staff) tr.append(cell("user", "User"));
    const stepper = el("ol", { class: "stepper" });
    tr.append(
      cell("status", "Status", el("span", { class: "badge" }),
        el("details", { class: "timeline" }, el("summary", {}, stepper), el("table", { class: "timeline-table" }, el("tbody")))),
      cell("progress", "Progress", el("progress", { class: "overall", max: 1 }), el("small", { class: "stage muted" }),
        G.stageBars(false), el("small", { class: "seg-count muted", hidden: true }), el("small", { class: "objects", hidden: true })),
      cell("iteration", "Iter."), cell("started", "Started"), cell("ended", "Ended"), cell("duration", "Duration"),
    );
    return tr;
  }

  function setText(node, text) { if (node.textContent !== text) node.textContent = text; }

  function fillRow(tr, job) {
    tr.dataset.version = job.version;
    tr.dataset.status = job.status;
    const q = (sel) => tr.querySelector(sel);
    setText(q(".file-name"), job.original_name || "(unnamed)");
    setText(q(".facts-line"), job.width ? `${job.width}×${job.height} · ${job.frame_count} frames · ${fmt.bytes(job.size_bytes)}` : fmt.bytes(job.size_bytes));
    if (G.config.staff) setText(q(".c-user"), job.user);
    const badge = q(".badge");
    badge.className = `badge s-${job.status}`;
    setText(badge, job.status);
    badge.title = job.error || "";
    const bar = q("progress.overall");
    bar.value = job.progress;
    bar.title = `${Math.round(job.progress * 100)}% of all three stages`;
    setText(q(".stage"), G.stageText(job));
    G.fillStageBars(q(".stage-bars"), job);
    const segments = q(".seg-count");
    setText(segments, G.segmentsText(job));
    segments.hidden = !segments.textContent;
    segments.title = segments.hidden ? "" : "segments through all three stages";
    // A finished job: what it found, as distinct objects ("18 people, 9 cars"); its boxes in the title.
    const objects = q(".objects");
    setText(objects, job.status === "Exit" ? G.objectsText(job.summary) : "");
    objects.hidden = !objects.textContent;
    objects.title = objects.hidden ? "" : G.boxesText(job.summary);
    setText(q(".c-iteration"), String(job.iteration));
    const started = q(".c-started"), ended = q(".c-ended");
    setText(started, G.fmt.time(job.started_at)); started.title = G.fmt.dateTime(job.started_at);
    setText(ended, G.fmt.time(job.ended_at)); ended.title = G.fmt.dateTime(job.ended_at);
    setText(q(".c-duration"), fmt.duration(G.durationMs(job, Date.now())));
  }

  function drawTimeline(job) {
    const tr = rows.querySelector(`tr[data-job="${job.id}"]`);
    if (!tr) return;
    const events = timelines.get(job.id);
    G.renderStepper(tr.querySelector(".stepper"), job, events);
    const at = G.reachedAt(events);
    const first = at.Enqueue ? Date.parse(at.Enqueue) : null;
    tr.querySelector(".timeline-table tbody").replaceChildren(
      ...[...G.PIPELINE, "Failed", "Cancelled"].filter((s) => at[s]).map((status) => el("tr", { "data-status": status },
        el("th", { text: status }), el("td", { text: G.fmt.dateTime(at[status]) }),
        el("td", { class: "muted", text: first != null ? "+" + fmt.duration(Date.parse(at[status]) - first) : "" }))));
  }

  // Applies a job from any source (page data, snapshot, push, upload reply). False when it is not newer.
  function apply(job) {
    if (!store.accept(job)) return false;
    jobs.set(job.id, job);
    let tr = rows.querySelector(`tr[data-job="${job.id}"]`);
    if (!tr) {
      tr = buildRow(job);
      const empty = rows.querySelector("tr.empty");
      if (empty) empty.remove();
      const after = [...rows.children].find((r) => Number(r.dataset.job) < job.id); // newest first
      rows.insertBefore(tr, after || null);
    }
    fillRow(tr, job);
    drawTimeline(job);
    timelines.refresh(job);
    updateCounts();
    return true;
  }
  window.gedgeApply = apply; // the version rule, reachable from the browser tests

  function updateCounts() {
    let active = 0, failed = 0;
    for (const job of jobs.values()) {
      if (!G.TERMINAL.has(job.status)) active += 1;
      else if (job.status === "Failed") failed += 1;
    }
    counts.textContent = `${jobs.size} shown · ${active} active${failed ? ` · ${failed} failed` : ""}`;
  }

  if (!initial.jobs.length) rows.querySelector("tr.empty td").colSpan = columns;
  for (const job of initial.jobs) timelines.seed(job.id, job.status, initial.timelines[job.id] || []);
  [...initial.jobs].reverse().forEach(apply);

  // Running jobs' durations grow every second without any request.
  setInterval(() => {
    for (const job of jobs.values()) {
      if (job.started_at && !job.ended_at && !G.TERMINAL.has(job.status)) {
        const tr = rows.querySelector(`tr[data-job="${job.id}"]`);
        if (tr) setText(tr.querySelector(".c-duration"), fmt.duration(G.durationMs(job, Date.now())));
      }
    }
  }, 1000);

  G.connectJobs({ onSnapshot: (list) => list.forEach(apply), onUpdate: apply });

  // --- the uploader: several files, one progress bar each (bytes sent), errors next to the file ---

  const form = document.getElementById("upload-form");
  const input = document.getElementById("upload-input");
  const zone = document.getElementById("drop-zone");
  const list = document.getElementById("upload-list");
  const PARALLEL = 2; // more only splits the same uplink
  const queue = [];
  let running = 0;
  // Some systems report no type for video containers; the name decides then, and the server probes anyway.
  const VIDEO_NAME = /\.(mp4|m4v|mov|qt|mkv|webm|avi|ts|mts|m2ts|flv|mpe?g|wmv|asf|ogv|3gp|3g2|h264|264|hevc|265)$/i;
  const ERROR_TITLES = { not_a_video: "Not a video", too_large: "Too large", unsupported_type: "Unsupported type",
    video_required: "No file", throttled: "Too many uploads", too_many_active_jobs: "Too many active jobs",
    not_authenticated: "Logged out" };

  function randomToken() {
    const bytes = crypto.getRandomValues(new Uint8Array(16)); // works on plain http too, unlike randomUUID
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function problemWith(file) {
    if (file.size === 0) return ["not_a_video", "the file is empty"];
    if (file.size > G.config.maxUploadBytes) {
      return ["too_large", `${fmt.bytes(file.size)}; the limit is ${fmt.bytes(G.config.maxUploadBytes)}`];
    }
    const type = file.type || "";
    if (!type.startsWith("video/") && !VIDEO_NAME.test(file.name) && type !== "" && type !== "application/octet-stream") {
      return ["unsupported_type", `${type} is not a video format; choose a video file`];
    }
    return null;
  }

  class Upload {
    constructor(file, enhance, regions) {
      this.file = file; this.enhance = enhance; this.regions = regions || []; this.token = randomToken();
      this.bar = el("progress", { max: file.size || 1, value: 0 });
      this.status = el("span", { class: "upload-status" });
      this.error = el("p", { class: "upload-error", role: "alert", hidden: true });
      this.button = el("button", { class: "outline secondary small", type: "button", text: "Cancel" });
      this.button.addEventListener("click", () => this.cancelOrRetry());
      this.li = el("li", { class: "upload", "data-state": "queued" },
        el("div", { class: "upload-head" }, el("strong", { class: "upload-name", text: file.name }),
          el("small", { class: "muted", text: fmt.bytes(file.size) }), this.button),
        this.bar, this.status, this.error);
      list.prepend(this.li);
    }
    state(name, text) { this.li.dataset.state = name; this.status.textContent = text; showClear(); }
    fail(code, message) {
      this.state("error", "");
      this.error.hidden = false;
      // The API's message starts with what the title already says ("not a usable video: ..."): said once.
      const detail = code === "not_a_video" ? message.replace(/^not a usable video: /, "") : message;
      this.error.textContent = `${ERROR_TITLES[code] || "Upload failed"}: ${detail}`;
      this.error.dataset.code = code;
      this.bar.hidden = true;
      this.button.textContent = "Retry"; this.button.hidden = !["network", "server"].includes(code);
    }
    cancelOrRetry() {
      if (this.tus) { this.tus.abort(true).catch(() => {}); this.cancelled(); return; } // true: DELETE it too
      if (this.li.dataset.state === "error") { this.error.hidden = true; this.bar.hidden = false; enqueue(this); }
    }
    cancelled() { this.tus = null; this.state("cancelled", "upload cancelled"); this.bar.hidden = true; this.button.hidden = true; this.done(); }
    start(done) {
      // Resumable (tus, jobs/web/tus.py): chunks of G.config.chunkBytes, retried after a dropped connection, and
      // resumed after a page reload (the upload's address is kept in localStorage under the file's fingerprint).
      // The client_token travels in the metadata: whatever happens, the upload becomes one job.
      this.done = () => { const finish = done; done = () => {}; finish(); };
      this.button.textContent = "Cancel"; this.button.hidden = false;
      const upload = new tus.Upload(this.file, {
        endpoint: "/api/uploads/",
        chunkSize: G.config.chunkBytes,
        retryDelays: [0, 1000, 3000, 5000, 10000, 20000],
        metadata: { filename: this.file.name, client_token: this.token, enhance: this.enhance ? "true" : "" },
        headers: { "X-CSRFToken": G.csrfToken(), Accept: "application/json" },
        removeFingerprintOnSuccess: true,
        onProgress: (sent) => {
          this.bar.value = sent;
          this.state(sent < this.file.size ? "uploading" : "checking",
            sent < this.file.size ? `${fmt.bytes(sent)} of ${fmt.bytes(this.file.size)} sent` : "sent; checking the video…");
        },
        onAfterResponse: (req, res) => { const id = res.getHeader("Gedge-Job-Id"); if (id) this.jobId = id; },
        onSuccess: () => this.succeeded(),
        onShouldRetry: (err) => { const s = err.originalResponse ? err.originalResponse.getStatus() : 0; return s === 0 || s >= 500 || s === 409; },
        onError: (err) => {
          this.tus = null;
          const res = err.originalResponse;
          let body = null;
          try { body = res && JSON.parse(res.getBody()); } catch (_) { /* not JSON: a proxy's page */ }
          if (body && body.error) this.fail(body.error.code, body.error.message);
          else if (!res || res.getStatus() === 0) this.fail("network", "the connection dropped; Retry goes on from where it stopped");
          else this.fail(res.getStatus() === 413 ? "too_large" : "server", `the server answered ${res.getStatus()}`);
          this.done();
        },
      });
      this.tus = upload;
      this.state("uploading", "starting…");
      upload.findPreviousUploads().then((previous) => {
        if (previous.length) { upload.resumeFromPreviousUpload(previous[0]); this.state("uploading", "resuming…"); }
        upload.start();
      });
    }
    succeeded() {
      // The job's row itself arrives through the socket (its creation is pushed like every change).
      this.tus = null;
      this.state("done", "");
      this.status.replaceChildren("queued as ", el("a", { href: `/jobs/${this.jobId}/`, text: `job #${this.jobId}` }));
      this.button.hidden = true;
      this.done();
      if (this.regions.length) this.addRegions();
    }
    // The counting lines and zones typed above the drop zone: added to the job once it exists (tus metadata
    // carries no JSON); the job counts them when it reaches Exit, or at once where it already has.
    async addRegions() {
      const note = el("span", { class: "regions-note muted", text: " · adding lines and zones…" });
      this.status.append(note);
      const problems = [];
      for (const region of this.regions) {
        try {
          await G.fetchJSON(`/api/jobs/${this.jobId}/regions/`, { method: "POST", body: JSON.stringify(region),
            headers: { Accept: "application/json", "Content-Type": "application/json", "X-CSRFToken": G.csrfToken() } });
        } catch (err) {
          problems.push(err.message);
        }
      }
      note.textContent = ` · ${this.regions.length - problems.length} of ${this.regions.length} lines and zones added`;
      if (problems.length) {
        this.error.hidden = false;
        this.error.textContent = `Lines and zones not added: ${problems.join("; ")}`;
      }
    }
  }

  // The list would grow all day: finished items (done, refused, cancelled) can be cleared in one click.
  const clear = document.getElementById("upload-clear");
  const FINISHED = ["done", "error", "cancelled"];
  function showClear() { clear.hidden = ![...list.children].some((li) => FINISHED.includes(li.dataset.state)); }
  clear.addEventListener("click", () => {
    for (const li of [...list.children]) if (FINISHED.includes(li.dataset.state)) li.remove();
    showClear();
  });

  function pump() {
    while (running < PARALLEL && queue.length) {
      const upload = queue.shift();
      running += 1;
      upload.start(() => { running -= 1; pump(); });
    }
  }

  function enqueue(upload) { upload.state("queued", "waiting…"); queue.push(upload); pump(); }

  // The optional counting lines and zones (JSON), checked for shape here and for geometry by the server.
  const regionsInput = document.getElementById("upload-regions");
  const regionsError = document.getElementById("upload-regions-error");
  function readRegions() {
    const text = regionsInput.value.trim();
    regionsError.hidden = true;
    if (!text) return [];
    let value = null;
    try { value = JSON.parse(text); } catch (err) { regionsError.textContent = `not valid JSON (${err.message})`; }
    if (value && !(Array.isArray(value) && value.every((r) => r && typeof r === "object" && !Array.isArray(r)))) {
      value = null;
      regionsError.textContent = 'a list of {"name": ..., "kind": "line" or "zone", "points": [[x, y], ...]} is expected';
    }
    if (value) return value;
    regionsError.textContent = `Counting lines and zones: ${regionsError.textContent}; nothing was uploaded.`;
    regionsError.hidden = false;
    regionsInput.closest("details").open = true;
    regionsInput.focus();
    return null;
  }

  function addFiles(files) {
    const enhance = form.elements.enhance.checked;
    const regions = files.length ? readRegions() : [];
    if (regions === null) return;
    for (const file of files) {
      const upload = new Upload(file, enhance, regions);
      const problem = problemWith(file);
      if (problem) upload.fail(...problem);
      else enqueue(upload);
    }
  }

  input.addEventListener("change", () => { addFiles([...input.files]); input.value = ""; });
  form.addEventListener("submit", (e) => { e.preventDefault(); addFiles([...input.files]); input.value = ""; });
  for (const name of ["dragenter", "dragover"]) {
    zone.addEventListener(name, (e) => { e.preventDefault(); zone.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    zone.addEventListener(name, (e) => { e.preventDefault(); zone.classList.remove("over"); });
  }
  zone.addEventListener("drop", (e) => addFiles([...e.dataTransfer.files]));
  // A file dropped next to the zone would make the browser navigate away from the console.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
})();

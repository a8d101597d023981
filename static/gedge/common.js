// Shared by the console and the job page: the job socket, the version rule, timelines and formatting.
// The database is the truth and the socket is a hint: every (re)connect starts with a fresh snapshot, and a
// job message older than what the page shows is dropped, so late or duplicated pushes cannot move a job back.
(function () {
  "use strict";

  const config = JSON.parse(document.getElementById("gedge-config").textContent);
  const PIPELINE = config.pipeline;
  const TERMINAL = new Set(config.terminal);

  function csrfToken() {
    const field = document.querySelector("input[name=csrfmiddlewaretoken]");
    if (field) return field.value;
    const cookie = document.cookie.split("; ").find((c) => c.startsWith("csrftoken="));
    return cookie ? decodeURIComponent(cookie.slice("csrftoken=".length)) : "";
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value == null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key in node && typeof value !== "string") node[key] = value;
      else node.setAttribute(key, value === true ? "" : value);
    }
    node.append(...children.filter((c) => c != null));
    return node;
  }

  const fmt = {
    time(iso) { return iso ? new Date(iso).toLocaleTimeString([], { hour12: false }) : ""; },
    dateTime(iso) { return iso ? new Date(iso).toLocaleString([], { hour12: false }) : ""; },
    duration(ms) {
      if (ms == null || Number.isNaN(ms)) return "";
      if (ms < 1000) return `${Math.round(ms)} ms`;
      const s = ms / 1000;
      if (s < 60) return `${s.toFixed(1)} s`;
      const m = Math.floor(s / 60);
      if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
      return `${Math.floor(m / 60)} h ${m % 60} min`;
    },
    // A position in a video: 0:07.4, 1:02:03.0.
    clock(ms) {
      const s = Math.max(0, ms || 0) / 1000;
      const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), rest = (s % 60).toFixed(1).padStart(4, "0");
      return h ? `${h}:${String(m).padStart(2, "0")}:${rest}` : `${m}:${rest}`;
    },
    bytes(n) {
      const units = ["B", "KB", "MB", "GB", "TB"];
      let i = 0;
      while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
      return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
    },
  };

  // The stage a status belongs to, and its frames done; a "waiting" stage is queued, not yet running.
  const STAGE_OF = {
    Enqueue: ["preprocess", "waiting"], Preprocessing: ["preprocess", "running"],
    Preprocessing_complete: ["inference", "waiting"], Inferencing: ["inference", "running"],
    Inferencing_complete: ["postprocess", "waiting"], Postprocessing: ["postprocess", "running"],
    Postprocessing_complete: ["postprocess", "done"], Exit: ["postprocess", "done"],
  };

  function stageText(job) {
    const total = job.frame_count || 0;
    if (job.status === "Exit") return `done · ${total} frames`;
    if (job.status === "Cancelled") return "cancelled";
    if (job.status === "Failed") return `failed${job.failed_stage ? " in " + job.failed_stage : ""}`;
    const [stage, phase] = STAGE_OF[job.status] || ["", ""];
    const done = (job.stage_progress || {})[stage] || 0;
    if (phase === "waiting") return `queued for ${stage}${job.iteration ? ` (retry ${job.iteration})` : ""}`;
    if (phase === "done") return `writing results · ${total} frames`;
    return `${stage} · ${done} / ${total || "?"} frames`;
  }

  // Frames done per stage over the whole video (the job's counters sum its segments, whose stages overlap):
  // three thin bars, built once and filled in place. With labels (the job page) each bar has its figures.
  const STAGES = ["preprocess", "inference", "postprocess"];

  function stageBars(labelled) {
    return el("div", { class: `stage-bars${labelled ? " labelled" : ""}`, role: "group", "aria-label": "frames done per stage" },
      ...STAGES.map((stage) => el("div", { class: "stage-bar", "data-stage": stage },
        labelled ? el("small", {}, el("span", { text: stage }), " ", el("span", { class: "n muted" })) : null,
        el("progress", { max: 1, value: 0 }))));
  }

  function fillStageBars(node, job) {
    const total = job.frame_count || 0;
    for (const stage of STAGES) {
      const done = Math.min((job.stage_progress || {})[stage] || 0, total || Infinity);
      const item = node.querySelector(`[data-stage="${stage}"]`);
      const bar = item.querySelector("progress");
      const text = `${done} / ${total || "?"} frames`;
      bar.value = total ? done / total : (job.status === "Exit" ? 1 : 0);
      bar.setAttribute("aria-label", `${stage}: ${text}`);
      item.title = `${stage}: ${text}`;
      const n = item.querySelector(".n");
      if (n && n.textContent !== text) n.textContent = text;
    }
  }

  // "k/n segments" (k through all three stages), only for a job cut into more than one.
  function segmentsText(job) {
    const n = job.segment_count || 0;
    return n > 1 ? `${job.segments_done || 0}/${n} segments` : "";
  }

  // Elapsed time of a job: fixed once it ended, still growing while it runs.
  function durationMs(job, now) {
    if (!job.started_at) return null;
    const end = job.ended_at ? Date.parse(job.ended_at) : (TERMINAL.has(job.status) ? null : now);
    return end == null ? null : end - Date.parse(job.started_at);
  }

  class VersionStore {
    constructor() { this.versions = new Map(); }
    // True when the job is newer than what the page shows (and records it); false for stale or duplicate.
    accept(job) {
      const known = this.versions.get(job.id);
      if (known !== undefined && job.version <= known) return false;
      this.versions.set(job.id, job.version);
      return true;
    }
  }

  // --- timelines: when each of the eight statuses was reached, from the job's events (JobEvent rows) ---

  // /events/ holds the job's own status changes (segment null) and its segments' (segment = index): the
  // job's stepper and timeline read only the former. Notes that change no status (a counting line added:
  // from_status == to_status) are left out of them too.
  function jobEvents(events) { return events.filter((e) => e.segment == null && e.from_status !== e.to_status); }

  // --- what a finished job found: "18 people, 9 cars, 1 bus" from summary.objects (distinct tracks per class) ---

  const PLURALS = { person: "people", mouse: "mice", knife: "knives", sheep: "sheep", skis: "skis", scissors: "scissors" };
  function plural(name, n) {
    if (n === 1) return name;
    return PLURALS[name] || (/(s|x|z|ch|sh)$/.test(name) ? `${name}es` : `${name}s`);
  }
  // Most first, then by name (the database's JSON keeps no key order).
  const byCount = (counts) => Object.entries(counts || {}).sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
  function objectsText(summary) {
    const objects = byCount(summary && summary.objects);
    if (!objects.length) return summary && summary.objects ? "no objects" : "";
    return objects.map(([name, n]) => `${n} ${plural(name, n)}`).join(", ");
  }
  function boxesText(summary) {
    const perClass = byCount(summary && summary.per_class);
    if (!summary || summary.detections == null) return "";
    return `${summary.detections} boxes${perClass.length ? ": " + perClass.map(([c, n]) => `${c} ${n}`).join(", ") : ""}`;
  }

  function reachedAt(events) {
    const at = {};
    for (const e of jobEvents(events)) at[e.to_status] = e.at; // a retried stage shows its latest attempt
    return at;
  }

  function renderStepper(list, job, events) {
    const at = reachedAt(events);
    const current = PIPELINE.indexOf(job.status);
    list.replaceChildren(...PIPELINE.map((status, i) => {
      let state = "todo";
      if (current >= 0) state = i < current || job.status === "Exit" ? "done" : i === current ? "current" : "todo";
      else if (at[status]) state = "done"; // Failed / Cancelled: show how far it got
      const when = at[status];
      return el("li", { class: state, "data-status": status, title: `${status}${when ? " · " + fmt.dateTime(when) : ""}` },
        el("span", { class: "step-name", text: status.replace("_complete", " ✓") }),
        el("time", { datetime: when || null, text: when ? fmt.time(when) : "" }));
    }));
    if (TERMINAL.has(job.status) && job.status !== "Exit") {
      list.append(el("li", { class: `end s-${job.status}`, "data-status": job.status },
        el("span", { class: "step-name", text: job.status }),
        el("time", { text: at[job.status] ? fmt.time(at[job.status]) : "" })));
    }
  }

  async function fetchJSON(url, options) {
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" }, ...options });
    let body = null;
    try { body = await response.json(); } catch (_) { /* empty or not JSON */ }
    if (!response.ok) {
      const message = body && body.error ? body.error.message : `${response.status} ${response.statusText}`;
      throw Object.assign(new Error(message), { status: response.status, code: body && body.error && body.error.code });
    }
    return body;
  }

  // The job's own status changes; with segments, its segments' too (``segment`` set).
  async function fetchEvents(jobId, { segments = false } = {}) {
    const body = await fetchJSON(`/api/jobs/${jobId}/events/${segments ? "?segments=1" : ""}`);
    return Array.isArray(body) ? body : body.results; // plain or paginated list
  }

  // Re-reads a job's events whenever the status the page shows differs from the one its timeline was built
  // for: one request per status change, none while nothing changes (the socket says when).
  class TimelineCache {
    // onChange(jobId): events arrived; latest(jobId): the job as the page shows it now.
    constructor(onChange, latest) {
      this.events = new Map(); this.builtFor = new Map(); this.busy = new Set();
      this.onChange = onChange; this.latest = latest;
    }
    seed(jobId, status, events) { this.events.set(jobId, events); this.builtFor.set(jobId, status); }
    get(jobId) { return this.events.get(jobId) || []; }
    refresh(job) {
      if (this.builtFor.get(job.id) === job.status || this.busy.has(job.id)) return;
      this.busy.add(job.id);
      const wanted = job.status;
      fetchEvents(job.id).then((events) => {
        this.busy.delete(job.id);
        this.events.set(job.id, events);
        // The events may already be ahead of the push that asked for them; that push will then match.
        const own = jobEvents(events);
        this.builtFor.set(job.id, own.length ? own[own.length - 1].to_status : wanted);
        this.onChange(job.id);
        const now = this.latest(job.id);
        if (now && now.status !== wanted) this.refresh(now); // it moved on while we were reading
      }, () => { this.busy.delete(job.id); /* the next push or reconnect tries again */ });
    }
  }

  // --- the socket: snapshot on every connect, then job.update pushes; a visible state while it is down ---

  function connectJobs({ onSnapshot, onUpdate }) {
    const badge = document.getElementById("socket-state");
    const banner = document.getElementById("reconnect-banner");
    let delay = 500;
    let everOpen = false;

    function show(state) {
      badge.hidden = false;
      badge.dataset.state = state;
      badge.textContent = { connecting: "connecting…", live: "live", reconnecting: "reconnecting…" }[state];
      banner.hidden = state !== "reconnecting";
      document.body.dataset.socket = state;
    }

    function open() {
      show(everOpen ? "reconnecting" : "connecting");
      const proto = location.protocol === "https:" ? "wss" : "ws";
      const ws = new WebSocket(`${proto}://${location.host}${config.socketPath}`);
      ws.onopen = () => { everOpen = true; delay = 500; };
      ws.onmessage = (event) => {
        const message = JSON.parse(event.data);
        if (message.type === "snapshot") { show("live"); onSnapshot(message.jobs); }
        else if (message.type === "job.update") onUpdate(message.job);
      };
      ws.onclose = (event) => {
        if (event.code === 4401) { location.reload(); return; } // session ended: the login page takes over
        show("reconnecting");
        // Jitter keeps a restarted server from being hit by every open page at the same instant.
        setTimeout(open, delay + Math.random() * delay / 2);
        delay = Math.min(delay * 2, 10000);
      };
    }
    open();
  }

  window.Gedge = { config, PIPELINE, TERMINAL, STAGES, csrfToken, el, fmt, stageText, stageBars, fillStageBars,
    segmentsText, durationMs, VersionStore, TimelineCache, renderStepper, reachedAt, jobEvents, fetchJSON, fetchEvents,
    connectJobs, plural, byCount, objectsText, boxesText };
})();

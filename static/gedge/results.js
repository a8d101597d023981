// The job page's results once the job reached Exit: what it found (the objects headline), its tracks (a click
// plays the video from where one was first seen) and its counting lines and zones, drawn on a canvas laid
// over the video's picture and counted by the server (POST /regions/ answers with the counts).
(function () {
  "use strict";
  const G = window.Gedge;
  const { el, fmt } = G;
  const $ = (id) => document.getElementById(id);
  const initial = JSON.parse($("gedge-initial").textContent);
  let job = initial.job;
  const jobId = job.id;
  const canEdit = Boolean(initial.canEditRegions);
  const player = $("player");
  const canvas = $("overlay");
  const COLORS = ["#f59e0b", "#22d3ee", "#a3e635", "#f472b6", "#a78bfa", "#fb7185"];
  const MAX_ZONE_POINTS = 64;
  const writeHeaders = () => ({ Accept: "application/json", "Content-Type": "application/json",
    "X-CSRFToken": G.csrfToken() });

  function drawHeadline() {
    const text = G.objectsText(job.summary);
    $("objects-headline").hidden = !text;
    $("objects-text").textContent = text;
    $("boxes-text").title = G.boxesText(job.summary);
  }

  // --- tracks: a page of 50 from /tracks/ at a time, filtered by class ---

  const trackRows = $("tracks").tBodies[0];
  const tracks = { next: null, selected: null, reading: 0 };
  const localUrl = (url) => { const u = new URL(url, location.href); return u.pathname + u.search; };

  function trackRow(t) {
    const tr = el("tr", { "data-track": t.id },
      el("td", {}, el("button", { type: "button", class: "link", text: `#${t.id}`, title: `play from ${fmt.clock(t.first_ms)}` })),
      el("td", { text: t.class }), el("td", { class: "num", text: fmt.clock(t.first_ms) }),
      el("td", { class: "num", text: fmt.clock(t.last_ms) }), el("td", { class: "num", text: fmt.duration(t.duration_ms) }));
    tr.track = t;
    return tr;
  }

  function loadTracks(url, fresh) {
    const reading = ++tracks.reading;
    const more = $("tracks-more");
    more.setAttribute("aria-busy", "true");
    return G.fetchJSON(url).then((page) => {
      if (reading !== tracks.reading) return; // the filter changed meanwhile
      if (fresh) trackRows.replaceChildren();
      trackRows.append(...page.results.map(trackRow));
      if (!page.count) trackRows.replaceChildren(el("tr", { class: "empty" }, el("td", { colspan: 5, text: "No tracks." })));
      tracks.next = page.next ? localUrl(page.next) : null;
      more.hidden = !tracks.next;
      const shown = trackRows.querySelectorAll("tr[data-track]").length;
      $("tracks-count").textContent = shown < page.count ? `(${shown} of ${page.count})` : `(${page.count})`;
    }, (err) => { $("tracks-count").textContent = `could not be read: ${err.message}`; })
      .finally(() => more.removeAttribute("aria-busy"));
  }

  function firstTracks() {
    const cls = $("track-class").value;
    return loadTracks(`/api/jobs/${jobId}/tracks/${cls ? `?class=${encodeURIComponent(cls)}` : ""}`, true);
  }
  $("track-class").addEventListener("change", firstTracks);
  $("tracks-more").addEventListener("click", () => { if (tracks.next) loadTracks(tracks.next, false); });
  trackRows.addEventListener("click", (e) => {
    const tr = e.target.closest("tr[data-track]");
    if (!tr) return;
    for (const row of trackRows.querySelectorAll("tr.selected")) { row.classList.remove("selected"); row.removeAttribute("aria-current"); }
    tr.classList.add("selected");
    tr.setAttribute("aria-current", "true");
    tracks.selected = tr.track;
    player.currentTime = tr.track.first_ms / 1000;
    drawOverlay();
  });

  // --- lines and zones: the table of counts ---

  let regions = initial.regions || [];
  const regionRows = $("regions").tBodies[0];
  const colorOf = (region) => COLORS[regions.indexOf(region) % COLORS.length];
  const perClass = (counts) => G.byCount(counts).map(([name, n]) => `${name} ${n}`).join(", ") || "none";

  function countsText(region) {
    const c = region.counts || {};
    if (region.kind === "line" && c.total) {
      return [`${c.total.forward} forward · ${c.total.backward} backward`,
        `forward: ${perClass(c.forward)}; backward: ${perClass(c.backward)}`];
    }
    if (region.kind === "zone" && c.entered) {
      return [`${c.entered_total} entered · at most ${c.max_present} at once`,
        perClass(c.entered) + (c.max_present_ms != null && c.max_present ? ` · most at ${fmt.clock(c.max_present_ms)}` : "")];
    }
    return ["not counted yet", ""];
  }

  function drawRegions() {
    regionRows.replaceChildren(...regions.map((r) => {
      const [counts, byClass] = countsText(r);
      const swatch = el("span", { class: "swatch", "aria-hidden": "true" });
      swatch.style.background = colorOf(r);
      return el("tr", { "data-region": r.id, "data-kind": r.kind },
        el("td", {}, swatch, r.name), el("td", { text: r.kind }),
        el("td", {}, el("span", { class: "counts", text: counts }), el("small", { class: "by-class", text: byClass })),
        canEdit ? el("td", {}, el("button", { type: "button", class: "outline secondary small", "data-delete": r.id,
          text: "Delete", "aria-label": `Delete ${r.kind} ${r.name}` })) : null);
    }));
    if (!regions.length) {
      regionRows.append(el("tr", { class: "empty" }, el("td", { colspan: canEdit ? 4 : 3,
        text: canEdit ? "None yet: draw a line or a zone on the video." : "None." })));
    }
    drawOverlay();
  }

  function upsert(region) {
    const i = regions.findIndex((r) => r.id === region.id);
    if (i >= 0) regions[i] = region; else regions.push(region);
  }

  function readRegions() {
    return G.fetchJSON(`/api/jobs/${jobId}/regions/`).then((list) => {
      regions = Array.isArray(list) ? list : list.results;
      drawRegions();
    }, () => { /* the next push tries again */ });
  }

  regionRows.addEventListener("click", async (e) => {
    const button = e.target.closest("button[data-delete]");
    if (!button) return;
    const region = regions.find((r) => r.id === Number(button.dataset.delete));
    button.setAttribute("aria-busy", "true");
    try {
      await G.fetchJSON(`/api/jobs/${jobId}/regions/${region.id}/`, { method: "DELETE", headers: writeHeaders() });
      regions = regions.filter((r) => r !== region);
      drawRegions();
      $("regions-status").textContent = `${region.kind} '${region.name}' deleted.`;
    } catch (err) {
      button.removeAttribute("aria-busy");
      $("regions-status").textContent = `Could not delete ${region.name}: ${err.message}`;
    }
  });

  // --- the overlay: a canvas over exactly the picture (the <video> box letterboxes it: object-fit contain) ---

  let rect = null; // the picture inside the player's box, CSS pixels; scale = CSS pixels per video pixel
  function layout() {
    const vw = player.videoWidth || job.width, vh = player.videoHeight || job.height;
    const bw = player.clientWidth, bh = player.clientHeight;
    if (!vw || !vh || !bw || !bh) return;
    const scale = Math.min(bw / vw, bh / vh);
    rect = { left: player.offsetLeft + (bw - vw * scale) / 2, top: player.offsetTop + (bh - vh * scale) / 2,
      width: vw * scale, height: vh * scale, scale };
    Object.assign(canvas.style, { left: `${rect.left}px`, top: `${rect.top}px`, width: `${rect.width}px`,
      height: `${rect.height}px` });
    const dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(rect.width * dpr);
    canvas.height = Math.round(rect.height * dpr);
    drawOverlay();
  }
  new ResizeObserver(layout).observe(player);
  player.addEventListener("loadedmetadata", layout);

  // Video pixels -> original pixels: the annotated video is the original padded by at most one pixel on the
  // right and bottom (same coordinates); another size would be a scaled copy.
  function factors() {
    const vw = player.videoWidth || job.width, vh = player.videoHeight || job.height;
    return [Math.abs(vw - job.width) <= 1 ? 1 : job.width / vw, Math.abs(vh - job.height) <= 1 ? 1 : job.height / vh];
  }
  const clamp = (v, hi) => Math.min(Math.max(v, 0), hi);
  function toOriginal(e) {
    const box = canvas.getBoundingClientRect();
    const [fx, fy] = factors();
    const x = ((e.clientX - box.left) / rect.scale) * fx, y = ((e.clientY - box.top) / rect.scale) * fy;
    return [clamp(Math.round(x * 10) / 10, job.width), clamp(Math.round(y * 10) / 10, job.height)];
  }
  function toCanvas([x, y]) {
    const [fx, fy] = factors();
    return [(x / fx) * rect.scale, (y / fy) * rect.scale];
  }

  function tracePath(ctx, points, closed) {
    ctx.beginPath();
    points.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    if (closed) ctx.closePath();
  }
  function strokeOutlined(ctx, color, width) {
    ctx.strokeStyle = "rgba(0, 0, 0, .55)"; ctx.lineWidth = width + 2.5; ctx.stroke();
    ctx.strokeStyle = color; ctx.lineWidth = width; ctx.stroke();
  }
  function label(ctx, text, x, y) {
    ctx.lineWidth = 3; ctx.strokeStyle = "rgba(0, 0, 0, .75)"; ctx.fillStyle = "#fff";
    ctx.strokeText(text, x, y); ctx.fillText(text, x, y);
  }

  // A line with an arrow from its middle towards the side crossing into which counts "forward" (the right of
  // someone walking from A to B, y pointing down); a zone filled translucent; both named.
  function drawShape(ctx, kind, points, color, name) {
    ctx.fillStyle = color;
    tracePath(ctx, points, kind === "zone");
    if (kind === "zone" && points.length > 2) { ctx.globalAlpha = 0.22; ctx.fill(); ctx.globalAlpha = 1; }
    strokeOutlined(ctx, color, 3);
    let [lx, ly] = points.reduce(([sx, sy], [x, y]) => [sx + x / points.length, sy + y / points.length], [0, 0]);
    if (kind === "line" && points.length === 2) {
      const [[ax, ay], [bx, by]] = points;
      const len = Math.hypot(bx - ax, by - ay) || 1;
      const nx = -(by - ay) / len, ny = (bx - ax) / len;
      const tip = [lx + nx * 24, ly + ny * 24];
      tracePath(ctx, [[lx, ly], tip]);
      strokeOutlined(ctx, color, 3);
      tracePath(ctx, [[tip[0] - nx * 9 + ny * 6, tip[1] - ny * 9 - nx * 6], tip, [tip[0] - nx * 9 - ny * 6, tip[1] - ny * 9 + nx * 6]]);
      strokeOutlined(ctx, color, 3);
      [lx, ly] = [tip[0] + nx * 14, tip[1] + ny * 14];
    }
    if (name) label(ctx, name, lx, ly);
  }

  let draft = null; // {kind, points (original pixels), cursor, done}
  let frame = 0;
  function drawOverlay() {
    cancelAnimationFrame(frame);
    frame = requestAnimationFrame(paint);
  }
  function paint() {
    const show = Boolean(draft) || ($("show-regions").checked && (regions.length > 0 || tracks.selected != null));
    canvas.hidden = !show;
    canvas.classList.toggle("drawing", Boolean(draft));
    if (!show || !rect) return;
    const ctx = canvas.getContext("2d");
    const dpr = canvas.width / rect.width || 1;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, rect.width, rect.height);
    ctx.font = "600 14px system-ui, sans-serif";
    ctx.textAlign = "center"; ctx.textBaseline = "middle"; ctx.lineJoin = "round"; ctx.lineCap = "round";
    for (const region of regions) drawShape(ctx, region.kind, region.points.map(toCanvas), colorOf(region), region.name);
    if (tracks.selected && tracks.selected.path.length) {
      const path = tracks.selected.path.map(([, x, y]) => toCanvas([x, y]));
      ctx.setLineDash([5, 4]); tracePath(ctx, path); strokeOutlined(ctx, "#fff", 2); ctx.setLineDash([]);
      label(ctx, `#${tracks.selected.id}`, path[0][0], path[0][1] - 12);
    }
    if (draft) {
      const points = [...draft.points, ...(draft.cursor && !draft.done ? [draft.cursor] : [])].map(toCanvas);
      ctx.setLineDash([6, 4]);
      drawShape(ctx, draft.kind, points, "#facc15", draft.done ? $("region-name").value : "");
      ctx.setLineDash([]);
      for (const [x, y] of draft.points.map(toCanvas)) {
        ctx.beginPath(); ctx.arc(x, y, 4, 0, 2 * Math.PI); ctx.fillStyle = "#facc15"; ctx.fill();
      }
    }
  }
  $("show-regions").addEventListener("change", drawOverlay);

  // --- drawing: "Draw a line" (two clicks) or "Draw a zone" (clicks, then double-click or Finish); Esc cancels ---

  const panel = $("draw-panel"), form = $("region-form"), nameInput = $("region-name"), finish = $("draw-finish");
  const HINTS = {
    line: "Click the two ends of the line on the video, A then B. Crossing it towards the arrow counts forward, "
      + "the other way backward. Esc cancels.",
    zone: "Click the zone's corners on the video; double-click the last one or press Finish to close it. Esc cancels.",
  };

  function defaultName(kind) {
    const names = new Set(regions.map((r) => r.name));
    let n = 1;
    while (names.has(`${kind} ${n}`)) n += 1;
    return `${kind} ${n}`;
  }

  function startDraft(kind) {
    player.pause();
    draft = { kind, points: [], cursor: null, done: false };
    for (const b of document.querySelectorAll(".draw-tools button[data-kind]")) b.setAttribute("aria-pressed", String(b.dataset.kind === kind));
    panel.hidden = false; form.hidden = true; finish.hidden = kind !== "zone"; finish.disabled = true;
    $("draw-hint").textContent = HINTS[kind];
    $("region-error").textContent = "";
    layout();
    drawOverlay();
  }

  function endDraft() {
    draft = null;
    panel.hidden = true;
    for (const b of document.querySelectorAll(".draw-tools button[data-kind]")) b.setAttribute("aria-pressed", "false");
    drawOverlay();
  }

  function finishDraft() {
    draft.done = true;
    draft.cursor = null;
    finish.hidden = true;
    form.hidden = false;
    $("draw-hint").textContent = `The ${draft.kind} has ${draft.points.length} points: name it and save it, or cancel.`;
    nameInput.value = defaultName(draft.kind);
    nameInput.focus();
    nameInput.select();
    drawOverlay();
  }

  for (const button of document.querySelectorAll(".draw-tools button[data-kind]")) {
    button.addEventListener("click", () => startDraft(button.dataset.kind));
  }
  $("draw-cancel").addEventListener("click", endDraft);
  finish.addEventListener("click", () => { if (draft && draft.points.length >= 3) finishDraft(); });
  document.addEventListener("keydown", (e) => { if (e.key === "Escape" && draft) endDraft(); });
  nameInput.addEventListener("input", drawOverlay);

  canvas.addEventListener("click", (e) => {
    if (!draft || draft.done || !rect) return;
    const point = toOriginal(e);
    const last = draft.points[draft.points.length - 1];
    if (last && Math.hypot(point[0] - last[0], point[1] - last[1]) * rect.scale < 4) return; // a double click's second
    draft.points.push(point);
    finish.disabled = draft.points.length < 3;
    if (draft.kind === "line" ? draft.points.length === 2 : draft.points.length >= MAX_ZONE_POINTS) finishDraft();
    else drawOverlay();
  });
  canvas.addEventListener("dblclick", () => { if (draft && !draft.done && draft.points.length >= 3) finishDraft(); });
  canvas.addEventListener("mousemove", (e) => { if (draft && !draft.done && rect) { draft.cursor = toOriginal(e); drawOverlay(); } });
  canvas.addEventListener("mouseleave", () => { if (draft) { draft.cursor = null; drawOverlay(); } });

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!draft || !draft.done) return;
    const save = form.querySelector("button[type=submit]");
    $("region-error").textContent = "";
    save.setAttribute("aria-busy", "true");
    try {
      const region = await G.fetchJSON(`/api/jobs/${jobId}/regions/`, { method: "POST", headers: writeHeaders(),
        body: JSON.stringify({ name: nameInput.value.trim(), kind: draft.kind, points: draft.points }) });
      upsert(region);
      endDraft();
      drawRegions();
      $("regions-status").textContent = `${region.kind} '${region.name}' saved: ${countsText(region)[0]}.`;
    } catch (err) {
      $("region-error").textContent = `Could not save: ${err.message}`;
    } finally {
      save.removeAttribute("aria-busy");
    }
  });

  drawHeadline();
  drawRegions();
  firstTracks();
  if (player.readyState >= 1) layout();

  // job.js hands every newer version of the job here: a line or zone changed elsewhere bumps it too.
  G.results = {
    update(next) {
      job = next;
      drawHeadline();
      if (job.status === "Exit") readRegions();
    },
  };
})();

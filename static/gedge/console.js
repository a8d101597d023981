// Live console: the server's snapshot and job.update pushes keep the table current. The database is the
// truth: on reconnect the server sends a fresh snapshot; an update older than what we show is ignored.
(function () {
  "use strict";
  const rows = document.getElementById("job-rows");
  const state = document.getElementById("socket-state");
  const versions = new Map();
  let retry = 500;

  function cell(text) { const td = document.createElement("td"); td.textContent = text == null ? "" : text; return td; }

  function render(job) {
    const known = versions.get(job.id);
    if (known !== undefined && job.version <= known) return false; // stale or duplicate
    versions.set(job.id, job.version);
    let tr = rows.querySelector(`tr[data-job="${job.id}"]`);
    const fresh = !tr;
    if (fresh) { tr = document.createElement("tr"); tr.dataset.job = job.id; }
    tr.dataset.version = job.version;
    tr.replaceChildren();
    const id = document.createElement("td"); const a = document.createElement("a");
    a.href = `/jobs/${job.id}/`; a.textContent = job.id; id.append(a); tr.append(id);
    tr.append(cell(job.original_name));
    const st = document.createElement("td"); const badge = document.createElement("span");
    badge.className = `badge s-${job.status}`; badge.textContent = job.status; st.append(badge); tr.append(st);
    const pr = document.createElement("td"); const bar = document.createElement("progress");
    bar.max = 1; bar.value = job.progress; pr.append(bar); tr.append(pr);
    tr.append(cell(job.iteration));
    tr.append(cell(job.started_at ? new Date(job.started_at).toLocaleString() : ""));
    tr.append(cell(job.duration_ms != null ? `${job.duration_ms} ms` : ""));
    if (fresh) {
      const empty = rows.querySelector("tr.empty"); if (empty) empty.remove();
      const after = [...rows.children].find((r) => Number(r.dataset.job) < job.id);
      rows.insertBefore(tr, after || null);
    }
    return true;
  }

  window.gedgeApply = render; // exposed for tests of the version rule

  function connect() {
    const proto = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${proto}://${location.host}/ws/jobs/`);
    ws.onopen = () => { state.textContent = "live"; state.dataset.state = "live"; retry = 500; };
    ws.onmessage = (ev) => {
      const msg = JSON.parse(ev.data);
      if (msg.type === "snapshot") msg.jobs.forEach((j) => { versions.delete(j.id); render(j); });
      else if (msg.type === "job.update") render(msg.job);
    };
    ws.onclose = () => {
      state.textContent = "reconnecting…"; state.dataset.state = "reconnecting";
      setTimeout(connect, retry); retry = Math.min(retry * 2, 10000);
    };
  }
  rows.querySelectorAll("tr[data-job]").forEach((tr) => versions.set(Number(tr.dataset.job), Number(tr.dataset.version)));
  connect();
})();

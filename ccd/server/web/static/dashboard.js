// ccd dashboard: follows the page's one event stream and keeps the server-rendered page live.
// Plain JavaScript, no library. Every URL is relative to the page's <base>.
"use strict";
(() => {
  const body = document.body;
  const TERMINAL = new Set(["succeeded", "failed", "cancelled", "skipped"]);
  const RETRYABLE = ["failed", "cancelled", "skipped"];
  const ORDER = ["running", "submitted", "ready", "waiting", "succeeded", "failed", "cancelled", "skipped"];
  const BAR_ORDER = ["succeeded", "failed", "cancelled", "skipped", "running", "submitted", "ready", "waiting"];
  const $ = (selector, root = document) => root.querySelector(selector);
  const fmt = new Intl.NumberFormat("en-US");

  // -- text, as the server writes it (ccd/server/web/views.py) -------------------------------
  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 60) return seconds.toFixed(1) + "s";
    let s = Math.floor(seconds), m = Math.floor(s / 60); s %= 60;
    let h = Math.floor(m / 60); m %= 60;
    const d = Math.floor(h / 24); h %= 24;
    const two = (n) => String(n).padStart(2, "0");
    if (d) return `${d}d ${h}h`;
    return h ? `${h}h ${two(m)}m` : `${m}m ${two(s)}s`;
  }
  function exitText(job) {
    if (job.state === "running") return "–";
    let text = "";
    if (job.signal !== null) text = `signal ${job.signal}`;
    else if (job.exit_code !== null) text = `exit ${job.exit_code}`;
    if (job.reason && job.reason !== `exit code ${job.exit_code}`) {  // said once is enough
      const reason = job.reason.split(/\s+/).filter(Boolean).join(" ");
      text = text ? `${text} · ${reason}` : reason;
    }
    return text || "–";
  }
  function jobDuration(job, now) {
    if (job.started_at === null) return null;
    const inFlight = job.state === "running" || job.state === "submitted";
    if (!inFlight && job.ended_at === null) return null;
    return Math.max(0, (job.ended_at === null ? now : job.ended_at) - job.started_at);
  }
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    node.append(...children);
    return node;
  }
  const badge = (state) => el("span", { class: `badge s-${state}` }, state);
  function meter(percent, label) {
    const fill = el("span", { class: "fill", style: `width: ${percent}%` });
    return el("span", { class: "meter", role: "progressbar", "aria-valuemin": "0",
      "aria-valuemax": "100", "aria-valuenow": String(percent), "aria-label": label }, fill);
  }
  const nowS = () => Date.now() / 1000;
  const num = (value) => (value === "" || value === undefined ? null : Number(value));

  // -- the one stream ------------------------------------------------------------------------
  // The browser reconnects by itself (sending Last-Event-ID); if it gives up (the daemon was
  // away too long, or answered an error while restarting), the page reconnects, resuming after
  // the last id it saw: a restarted daemon replays what the page missed, with no reload.
  window.ccdStream = { events: 0 };
  function follow(url, onEvent, kinds = []) {
    const live = $("#live");
    let last = body.dataset.cursor || "";
    let delayMs = 1000;
    const status = (cls, text) => { live.className = `live ${cls}`; $(".text", live).textContent = text; };
    const open = () => {
      const target = new URL(url, document.baseURI);
      if (last !== "") target.searchParams.set("after", last);
      const source = new EventSource(target);
      const handle = (e) => {
        window.ccdStream.events++;  // read by bench/web_bench.py
        if (e.lastEventId) last = e.lastEventId;
        onEvent(e.type, JSON.parse(e.data));
      };
      source.onopen = () => { delayMs = 1000; status("on", "Live"); };
      source.onerror = () => {
        status("retrying", "Reconnecting…");
        if (source.readyState === EventSource.CLOSED) {
          setTimeout(open, delayMs);
          delayMs = Math.min(delayMs * 2, 10000);
        }
      };
      source.onmessage = handle;
      for (const kind of kinds) source.addEventListener(kind, handle);
    };
    open();
  }

  // -- actions -------------------------------------------------------------------------------
  function csrfHeaders() {
    const meta = $('meta[name="csrf-token"]');
    return meta ? { "X-CSRF-Token": meta.content } : {};
  }
  async function call(method, url, payload) {
    const response = await fetch(url, {
      method, credentials: "same-origin",
      headers: { "Content-Type": "application/json", ...csrfHeaders() },
      body: payload === undefined ? undefined : JSON.stringify(payload),
    });
    let data = {};
    try { data = await response.json(); } catch { /* an empty or non-JSON answer */ }
    return { ok: response.ok, status: response.status, data };
  }
  function notice(text, isError) {
    const box = $("#action-result");
    if (!box) return;
    box.textContent = text;
    box.className = isError ? "notice error" : "notice";
    box.hidden = false;
  }
  // Which actions make sense now: set by each page from what its stream last said.
  const actionState = { finished: false, retryable: false };
  function refreshButtons() {
    const cancel = $('button[data-action="cancel"]'), retry = $('button[data-action="retry"]');
    const del = $('button[data-action="delete"]');
    if (cancel) cancel.disabled = actionState.finished;
    if (retry) retry.disabled = !actionState.retryable;
    if (del) { del.disabled = !actionState.finished; del.title = actionState.finished ? "" : "Cancel it first"; }
  }
  function setupActions() {
    const dialog = $("#confirm-delete");
    for (const button of document.querySelectorAll("button[data-action]")) {
      button.addEventListener("click", async () => {
        const action = button.dataset.action;
        if (action === "delete") { dialog.showModal(); return; }
        const jobs = button.dataset.jobs ? [button.dataset.jobs] : null;
        button.disabled = true;
        const result = await call("POST", button.dataset.url, { jobs });
        button.disabled = false;
        refreshButtons();  // what the stream said meanwhile (say, the workflow ended) wins
        if (!result.ok) { notice(result.data.error || `failed (HTTP ${result.status})`, true); return; }
        const names = result.data.cancelled || result.data.retried || [];
        const verb = action === "cancel" ? "Cancelling" : "Retrying";
        notice(names.length ? `${verb} ${names.length} job${names.length > 1 ? "s" : ""}: ${names.slice(0, 8).join(", ")}${names.length > 8 ? ", …" : ""}` : "Nothing to do.", false);
      });
    }
    if (!dialog) return;
    dialog.addEventListener("close", async () => {
      if (dialog.returnValue !== "delete") return;
      const button = $('button[data-action="delete"]');
      const result = await call("DELETE", button.dataset.url);
      if (result.ok) { window.location.href = "./"; return; }
      notice(result.data.error || `failed (HTTP ${result.status})`, true);
    });
  }

  // -- the workflows page --------------------------------------------------------------------
  function workflowsPage() {
    const rows = $("#workflow-rows");
    const firstPage = body.dataset.listPage === "1";
    follow(body.dataset.stream, (kind, data) => {
      if (kind !== "workflow") return;
      const holder = document.createElement("tbody");
      holder.innerHTML = data.html;
      const row = holder.firstElementChild;
      const old = document.getElementById(`wf-${data.id}`);
      if (old) old.replaceWith(row);
      else if (firstPage) { rows.prepend(row); $(".card .empty")?.remove(); }
    }, ["workflow"]);
    setupSubmit();
  }
  function tickWorkflowRows(now) {
    for (const row of document.querySelectorAll("#workflow-rows tr")) {
      const created = num(row.dataset.created), ended = num(row.dataset.ended);
      const done = Number(row.dataset.done), total = Number(row.dataset.total);
      const elapsed = (ended ?? now) - created;
      $(".elapsed", row).textContent = duration(elapsed);
      $(".eta", row).textContent = duration(ended === null && done && done < total ? elapsed * (total - done) / done : null);
    }
  }

  function setupSubmit() {
    const form = $("#submit-form");
    const out = $("#submit-result");
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const file = $("#wf-file").files[0];
      if (!file) return;
      const text = await file.text();
      out.replaceChildren(el("p", { class: "note" }, `Checking ${file.name}…`));
      const result = await call("POST", "workflows", {
        yaml: text, source: file.name, base_dir: $("#wf-dir").value, fail_fast: $("#wf-fail-fast").checked,
      });
      if (result.ok) { window.location.href = `w/${encodeURIComponent(result.data.id)}`; return; }
      out.replaceChildren(problemsBox(file.name, text, result));
    });
  }
  function problemsBox(name, text, result) {
    const lines = text.split(/\r?\n/);
    const located = result.data.located || [];
    const list = el("ol");
    const messages = result.data.problems || [result.data.error || `HTTP ${result.status}`];
    messages.forEach((message, i) => {
      const where = located[i];
      const item = el("li");
      const match = /^(.*?:\d+): (.*)$/s.exec(message);
      if (match) item.append(el("span", { class: "where" }, match[1]), `: ${match[2]}`);
      else item.append(message);
      if (where && where.line && lines[where.line - 1] !== undefined) {
        item.append(el("pre", {}, el("span", { class: "ln" }, String(where.line)), lines[where.line - 1]));
      }
      list.append(item);
    });
    const count = messages.length;
    return el("div", { class: "problems" },
      el("h3", {}, `${name} was not submitted: ${count} problem${count > 1 ? "s" : ""}`), list);
  }

  // -- one workflow's page -------------------------------------------------------------------
  function workflowPage() {
    const data = JSON.parse($("#graph-data").textContent);
    const counts = Object.assign({}, data.counts);
    const boxCounts = data.box_counts || [];
    const jobs = new Map();  // job -> its row as last told ("now")
    const dirtyJobs = new Set(), dirtyBoxes = new Set();
    let dirtyTotals = false, scheduled = false;
    const summary = $("#wf-summary");
    const rows = new Map([...document.querySelectorAll("#job-rows tr")].map((tr) => [tr.dataset.job, tr]));
    const schedule = () => { if (!scheduled) { scheduled = true; requestAnimationFrame(draw); } };

    follow(body.dataset.stream, (_kind, ev) => {
      if (ev.job === null) { workflowState(ev.state, ev.at); return; }
      const box = data.box_of[ev.job];
      if (box === undefined) { notice("This workflow gained jobs: reload to see them.", false); return; }
      if (ev.id !== undefined && ev.old && ev.old !== ev.state) {  // a stored change: counts move
        counts[ev.old] = (counts[ev.old] || 0) - 1;
        counts[ev.state] = (counts[ev.state] || 0) + 1;
        dirtyTotals = true;
        if (data.grouped) {
          const c = boxCounts[box];
          c[ev.old] = (c[ev.old] || 0) - 1;
          c[ev.state] = (c[ev.state] || 0) + 1;
          dirtyBoxes.add(box);
        }
      }
      if (ev.now) { jobs.set(ev.job, ev.now); dirtyJobs.add(ev.job); }
      schedule();
    });

    function workflowState(state, at) {
      $("#wf-state").replaceChildren(badge(state));
      actionState.finished = state !== "running";
      summary.dataset.ended = actionState.finished ? String(at || nowS()) : "";
      refreshButtons();
    }

    function draw() {
      scheduled = false;
      for (const name of dirtyJobs) {
        const job = jobs.get(name);
        if (!data.grouped) drawJobBox(data.box_of[name], job);
        const tr = rows.get(name);
        if (tr) drawRow(tr, job);
      }
      dirtyJobs.clear();
      for (const box of dirtyBoxes) drawGroupBox(box, boxCounts[box]);
      dirtyBoxes.clear();
      if (dirtyTotals) drawTotals();
      dirtyTotals = false;
    }

    function drawJobBox(index, job) {
      const box = document.getElementById(`b${index}`);
      if (!box) return;
      box.setAttribute("class", `box s-${job.state}`);
      const shown = job.progress !== null && !TERMINAL.has(job.state) ? job.progress : null;
      $(".status", box).textContent = shown === null ? job.state : `${job.state} · ${shown}%`;
      const frame = $(".frame", box);
      $(".bar", box).setAttribute("width", ((shown || 0) / 100 * (Number(frame.getAttribute("width")) - 2)).toFixed(1));
    }

    function drawGroupBox(index, c) {
      const box = document.getElementById(`b${index}`);
      if (!box) return;
      const total = Number(box.dataset.total);
      const frame = $(".frame", box);
      const width = Number(frame.getAttribute("width")) - 2;
      let x = Number(frame.getAttribute("x")) + 1;
      const segs = box.querySelectorAll(".seg");
      BAR_ORDER.forEach((state, i) => {
        const w = (c[state] || 0) / total * width;
        segs[i].setAttribute("x", x.toFixed(1));
        segs[i].setAttribute("width", w.toFixed(1));
        x += w;
      });
      const done = [...TERMINAL].reduce((n, s) => n + (c[s] || 0), 0);
      $(".status", box).textContent = `${fmt.format(done)} of ${fmt.format(total)} done`;
      box.setAttribute("class", `box group s-${aggregate(c, total)}`);
    }
    function aggregate(c, total) {  // as graph.aggregate
      for (const s of ["running", "submitted", "failed"]) if (c[s]) return s;
      if (c.ready || c.waiting) return "waiting";
      return c.succeeded === total ? "succeeded" : "cancelled";
    }

    function drawRow(tr, job) {
      $(".state", tr).replaceChildren(badge(job.state));
      $(".host", tr).textContent = job.host;
      $(".attempt", tr).textContent = job.attempts || "–";
      $(".exit", tr).textContent = exitText(job);
      const cell = $(".progress", tr);
      const parts = [];
      if (job.progress !== null) parts.push(meter(job.progress, `Progress of ${tr.dataset.job}`), el("span", { class: "pct" }, `${job.progress}%`));
      parts.push(el("span", { class: "msg" }, job.message || ""));
      cell.replaceChildren(...parts);
      tr.dataset.started = job.started_at ?? "";
      tr.dataset.ended = job.ended_at ?? "";
      tr.dataset.state = job.state;
      $(".duration", tr).textContent = duration(jobDuration(job, nowS()));
    }

    function drawTotals() {
      const total = Number(summary.dataset.total);
      const done = [...TERMINAL].reduce((n, s) => n + (counts[s] || 0), 0);
      const percent = total ? Math.floor(100 * done / total) : 100;
      summary.dataset.done = String(done);
      $("#wf-done").textContent = fmt.format(done);
      $("#wf-pct").textContent = `${percent}%`;
      const bar = $(".overall .meter", summary);
      bar.setAttribute("aria-valuenow", String(percent));
      $(".fill", bar).style.width = `${percent}%`;
      const list = el("ul", { class: "counts", "aria-label": "Jobs by state" });
      const href = `w/${encodeURIComponent(body.dataset.workflow)}`;
      for (const state of ORDER) {
        if (!counts[state]) continue;
        const link = el("a", { href: `${href}?state=${state}#jobs` }, el("b", {}, fmt.format(counts[state])), ` ${state}`);
        list.append(el("li", { class: `s-${state}`, "data-state": state }, link));
      }
      $("#wf-counts").replaceChildren(list);
      actionState.retryable = RETRYABLE.some((s) => counts[s]);
      refreshButtons();
    }
    actionState.finished = body.dataset.finished === "1";
    actionState.retryable = RETRYABLE.some((s) => counts[s]);
    setupActions();
  }
  function tickWorkflow(now) {
    const summary = $("#wf-summary");
    const created = num(summary.dataset.created), ended = num(summary.dataset.ended);
    const total = Number(summary.dataset.total);
    const done = Number(summary.dataset.done ?? $("#wf-done").textContent.replace(/,/g, ""));
    const elapsed = (ended ?? now) - created;
    $(".elapsed", summary).textContent = duration(elapsed);
    $(".eta", summary).textContent = duration(ended === null && done && done < total ? elapsed * (total - done) / done : null);
    for (const tr of document.querySelectorAll('#job-rows tr[data-state="running"], #job-rows tr[data-state="submitted"]')) {
      const started = num(tr.dataset.started);
      if (started !== null) $(".duration", tr).textContent = duration(now - started);
    }
  }

  // -- one job's page ------------------------------------------------------------------------
  function jobPage() {
    const log = $("#log");
    const followBox = $("#log-follow");
    const KEEP_CHARS = 400000;  // the page keeps about this much log text
    let kept = 0;
    let placeholder = $(".empty", log);
    follow(body.dataset.stream, (kind, data) => {
      if (kind === "job") {
        $("#job-facts").innerHTML = data.html.job_facts;
        $("#attempt-rows").innerHTML = data.html.attempt_rows;
        actionState.finished = TERMINAL.has(data.job.state);
        actionState.retryable = RETRYABLE.includes(data.job.state);
        refreshButtons();
        return;
      }
      if (kind !== "log") return;
      if (placeholder) { placeholder.remove(); placeholder = null; }
      if (data.start) {
        $("#log-attempt").textContent = `attempt ${data.attempt}`;
        $("#log-raw").href = `${$("#log-raw").href.split("?")[0]}?attempt=${data.attempt}`;
        if (log.childNodes.length) log.append(el("span", { class: "attempt" }, `attempt ${data.attempt}`));
        if (data.skipped) log.append(el("span", { class: "skipped" }, `… ${fmt.format(data.skipped)} earlier bytes not shown (see the raw log)\n`));
      }
      if (data.text) {
        log.append(document.createTextNode(data.text));
        kept += data.text.length;
        while (kept > KEEP_CHARS && log.firstChild) {
          kept -= log.firstChild.textContent.length;
          log.firstChild.remove();
        }
      }
      if (followBox.checked) log.scrollTop = log.scrollHeight;
    }, ["job", "log"]);
    setupActions();
  }
  function tickJob(now) {
    const cell = $("#job-facts .duration");
    if (cell && cell.dataset.running) cell.textContent = duration(now - num(cell.dataset.started));
  }

  const pages = {
    workflows: [workflowsPage, tickWorkflowRows],
    workflow: [workflowPage, tickWorkflow],
    job: [jobPage, tickJob],
  };
  const entry = pages[body.dataset.page];
  if (!entry) return;
  entry[0]();
  setInterval(() => entry[1](nowS()), 1000);
})();

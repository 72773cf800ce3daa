// zq dashboard: one script for every page; the page's name is on <body data-page>.
// Data comes from the JSON API; changes arrive on /api/events (server-sent events).
"use strict";

const body = document.body;
const PAGE = body.dataset.page;
const ARG = body.dataset.arg;
const CAN_CONTROL = body.dataset.control === "1";
const WHY_NOT = body.dataset.why;
const main = document.getElementById("main");
const FINAL = new Set(["SUCCESS", "FAILURE", "REVOKED", "REJECTED", "IGNORED"]);
const COLORS = ["#1c7ed6", "#2f9e44", "#d9480f", "#e8a400", "#7048e8", "#0c8599",
                "#c2255c", "#5c940d"];

// -- small helpers ---------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function toast(message, bad) {
  const box = document.getElementById("toast");
  box.textContent = message;
  box.className = bad ? "toast bad" : "toast";
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.hidden = true; }, 4000);
}

async function getJSON(url) {
  const response = await fetch(url, {headers: {Accept: "application/json"}});
  const data = await response.json().catch(() => ({error: response.statusText}));
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

// A control action: asks the user first, then POSTs; the answer or the error is shown.
async function act(url, params, question) {
  if (!CAN_CONTROL) { toast("Control actions are off: " + WHY_NOT, true); return null; }
  if (!window.confirm(question)) return null;
  const response = await fetch(url, {method: "POST", body: JSON.stringify(params || {}),
                                     headers: {"Content-Type": "application/json"}});
  const data = await response.json().catch(() => ({error: response.statusText}));
  if (!response.ok) { toast(data.error || response.statusText, true); return null; }
  toast(data.message || "done");
  return data;
}

function fmtTime(ts) {
  if (!ts) return "";
  const d = new Date(ts * 1000);
  return d.toLocaleTimeString([], {hour12: false}) + "." + String(d.getMilliseconds()).padStart(3, "0");
}
function fmtDuration(s) {
  if (s === null || s === undefined) return "";
  if (s < 1) return (s * 1000).toFixed(1) + " ms";
  if (s < 120) return s.toFixed(2) + " s";
  if (s < 7200) return (s / 60).toFixed(1) + " min";
  return (s / 3600).toFixed(1) + " h";
}
function badge(state) { return el("span", {class: "badge s-" + state}, state); }
function show(value) {
  return typeof value === "string" ? value : JSON.stringify(value, null, 1);
}
function throttle(fn, ms) {
  let timer = null, again = false;
  return function run() {
    if (timer) { again = true; return; }
    fn();
    timer = setTimeout(() => { timer = null; if (again) { again = false; run(); } }, ms);
  };
}
function mount(...nodes) { main.replaceChildren(...nodes); }

// -- charts, drawn on a <canvas> ------------------------------------------------------------

function drawLines(canvas, xs, lines, opts) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth, height = canvas.clientHeight;
  canvas.width = width * ratio; canvas.height = height * ratio;
  const g = canvas.getContext("2d");
  g.scale(ratio, ratio);
  g.clearRect(0, 0, width, height);
  const left = 44, right = 10, top = 10, bottom = 22;
  const w = width - left - right, h = height - top - bottom;
  let most = 1;
  for (const line of lines) for (const v of line.values) most = Math.max(most, v);
  most = niceCeiling(most);
  g.font = "11px system-ui, sans-serif";
  g.fillStyle = "#6b7385"; g.strokeStyle = "#e9ecef"; g.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = top + h - (h * i) / 4;
    g.beginPath(); g.moveTo(left, y); g.lineTo(left + w, y); g.stroke();
    g.fillText(formatTick(most * i / 4), 4, y + 4);
  }
  const n = xs.length;
  const step = n > 1 ? w / (n - 1) : w;
  const labelEvery = Math.max(1, Math.ceil(n / 6));
  for (let i = 0; i < n; i += labelEvery) {
    g.fillText(opts.label(xs[i]), left + i * step - 14, height - 6);
  }
  for (const line of lines) {
    g.strokeStyle = line.color; g.lineWidth = 2; g.beginPath();
    line.values.forEach((v, i) => {
      const x = left + i * step, y = top + h - (h * v) / most;
      if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
    });
    g.stroke();
  }
}
function niceCeiling(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}
function formatTick(v) { return v >= 1000 ? (v / 1000).toFixed(1) + "k" : String(Math.round(v * 10) / 10); }
function legend(lines) {
  return el("div", {class: "legend"}, lines.map(l => el("span", {}, el("i", {style: "background:" + l.color}), l.name)));
}
function clock(t) { return new Date(t * 1000).toLocaleTimeString([], {hour12: false, hour: "2-digit", minute: "2-digit"}); }
function clockS(t) { return new Date(t * 1000).toLocaleTimeString([], {hour12: false}); }

// -- the live stream --------------------------------------------------------------------------

const listeners = [];
function onLive(fn) { listeners.push(fn); }
function startLive() {
  const health = document.getElementById("health");
  const source = new EventSource("/api/events");
  source.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.summary) {
      const s = message.summary;
      const up = s.router_up && s.results_up;
      health.textContent = (s.router_up ? "router up" : "router DOWN") + " · " +
        (s.results_up ? "results up" : "results DOWN") + " · " + s.workers_up + " workers";
      health.className = up ? "health" : "health down";
    }
    for (const fn of listeners) fn(message);
  };
  source.onerror = () => { health.textContent = "reconnecting…"; health.className = "health down"; };
}

// -- overview -----------------------------------------------------------------------------------

function overviewPage() {
  const cards = el("div", {class: "cards"});
  const rates = el("canvas", {id: "chart-minutes"});
  const perSecond = el("canvas", {id: "chart-seconds"});
  const depths = el("canvas", {id: "chart-depths"});
  const minuteLines = [{name: "succeeded", color: "#2f9e44", key: "succeeded"},
                       {name: "failed", color: "#d9480f", key: "failed"},
                       {name: "retried", color: "#e8a400", key: "retried"}];
  const depthLegend = el("div");
  mount(el("h1", {}, "Overview"), cards,
        el("div", {class: "panel"}, el("h2", {}, "Tasks per minute (last hour)"), legend(minuteLines), rates),
        el("div", {class: "panel"}, el("h2", {}, "Tasks ended per second (last 2 minutes)"), perSecond),
        el("div", {class: "panel"}, el("h2", {}, "Queue depths"), depthLegend, depths));
  const card = (n, l, id) => el("div", {class: "card", id}, el("div", {class: "n"}, n), el("div", {class: "l"}, l));
  async function refresh() {
    const data = await getJSON("/api/overview");
    const s = data.summary, m = s.this_minute;
    cards.replaceChildren(
      card(s.tasks_per_s, "tasks/s (last 10 s)", "card-rate"),
      card(m.succeeded, "succeeded this minute", "card-succeeded"),
      card(m.failed, "failed this minute", "card-failed"),
      card(m.retried, "retried this minute", "card-retried"),
      card(s.workers_up, "workers up (" + s.hosts_up + " hosts)", "card-workers"),
      card(s.queued, "tasks queued", "card-queued"),
      card(s.tasks, "tasks in view", "card-tasks"));
    const minutes = data.series.per_minute;
    drawLines(rates, minutes.map(r => r.t), minuteLines.map(l => ({color: l.color, values: minutes.map(r => r[l.key])})), {label: clock});
    const seconds = data.series.per_second.slice(0, -1);
    drawLines(perSecond, seconds.map(r => r.t), [{color: "#1c7ed6", values: seconds.map(r => r.succeeded + r.failed)}], {label: clockS});
    const samples = data.series.depths;
    const names = [...new Set(samples.flatMap(p => Object.keys(p.depths)))].sort();
    const lines = names.map((q, i) => ({name: q, color: COLORS[i % COLORS.length], values: samples.map(p => p.depths[q] || 0)}));
    depthLegend.replaceChildren(legend(lines));
    drawLines(depths, samples.map(p => p.t), lines, {label: clockS});
  }
  const later = throttle(() => refresh().catch(e => toast(e.message, true)), 1000);
  onLive(message => { if (message.summary) later(); });
  later();
}

// -- tasks --------------------------------------------------------------------------------------

function tasksPage() {
  const params = new URLSearchParams(location.search);
  const field = (name, label, attrs) => el("label", {}, label, el("input", Object.assign({name, value: params.get(name) || ""}, attrs || {})));
  const states = ["", "SENT", "STARTED", "RETRY", "SUCCESS", "FAILURE", "REVOKED", "REJECTED"];
  const stateSelect = el("select", {name: "state"}, states.map(s => el("option", {value: s, selected: s === (params.get("state") || "")}, s || "any")));
  const form = el("form", {class: "filters", id: "filters"},
    field("search", "Search", {placeholder: "id, name, args, result…", size: 28}),
    el("label", {}, "State", stateSelect),
    field("taskname", "Task name"), field("workername", "Worker"), field("queue", "Queue"),
    field("received_start", "Since", {type: "datetime-local", step: 1}),
    field("received_end", "Until", {type: "datetime-local", step: 1}),
    el("button", {type: "submit"}, "Filter"));
  const count = el("div", {class: "muted", id: "task-count"});
  const rows = el("tbody", {id: "task-rows"});
  mount(el("h1", {}, "Tasks"), form, count,
        el("table", {id: "tasks"}, el("thead", {}, el("tr", {}, ["Name", "Id", "State", "Received", "Runtime", "Worker", "Queue", "Retries"].map(h => el("th", {}, h)))), rows));
  function query() {
    const q = new URLSearchParams({format: "list", limit: "200"});
    for (const [k, v] of new FormData(form).entries()) {
      if (!v) continue;
      q.set(k, k.startsWith("received_") ? String(new Date(v).getTime() / 1000) : v);
    }
    return q;
  }
  async function refresh() {
    const data = await getJSON("/api/tasks?" + query());
    count.textContent = data.total + " tasks match" + (data.total > data.tasks.length ? " (newest " + data.tasks.length + " shown)" : "");
    rows.replaceChildren(...data.tasks.map(t => el("tr", {"data-id": t.id, "data-state": t.state},
      el("td", {}, t.name || ""), el("td", {class: "mono"}, el("a", {href: "/task/" + encodeURIComponent(t.id)}, t.id)),
      el("td", {class: "state"}, badge(t.state)), el("td", {}, fmtTime(t.received)),
      el("td", {}, fmtDuration(t.runtime)), el("td", {class: "mono"}, t.worker || ""),
      el("td", {}, t.queue || ""), el("td", {}, t.retries))));
  }
  const later = throttle(() => refresh().catch(e => toast(e.message, true)), 700);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const shown = new URLSearchParams();
    for (const [k, v] of new FormData(form).entries()) if (v) shown.set(k, v);
    history.replaceState(null, "", "/tasks" + (shown.toString() ? "?" + shown : ""));
    later();
  });
  onLive(message => { if (message.tasks) later(); });
  later();
}

// -- one task -----------------------------------------------------------------------------------

function taskPage() {
  const id = ARG;
  async function refresh() {
    let t;
    try { t = await getJSON("/api/task/info/" + encodeURIComponent(id)); }
    catch (e) { mount(el("h1", {}, "Task " + id), el("p", {class: "muted", id: "task-error"}, e.message)); return; }
    const ended = FINAL.has(t.state);
    const revoke = el("button", {id: "revoke", class: "danger", disabled: ended || !CAN_CONTROL,
      onclick: () => act("/api/task/revoke/" + encodeURIComponent(id), {}, "Revoke task " + id + "?").then(refresh)}, "Revoke");
    const terminate = el("button", {id: "terminate", class: "danger", disabled: ended || !CAN_CONTROL,
      onclick: () => act("/api/task/revoke/" + encodeURIComponent(id), {terminate: true, signal: "SIGKILL"}, "Terminate task " + id + "? Its process is killed.").then(refresh)}, "Terminate");
    const kv = (k, v, attrs) => [el("dt", {}, k), el("dd", attrs || {}, v === null || v === undefined ? "" : v)];
    const held = (t.held || []).map(h => [h.state, h.queue ? "in " + h.queue : "", h.actor ? "on " + h.actor : "",
      h.until ? "until " + fmtTime(h.until) : "", h.parts !== undefined ? h.parts_ended + " of " + h.parts + " parts ended" : ""].filter(Boolean).join(" ")).join("; ");
    const outcome = t.state === "SUCCESS" || (!t.traceback && t.result !== null && t.result !== undefined)
      ? [el("h2", {}, "Result"), el("pre", {id: "result"}, show(t.result))]
      : t.traceback || t.exception ? [el("h2", {}, "Exception"), el("pre", {id: "traceback"}, t.traceback || t.exception)] : [];
    mount(
      el("h1", {}, (t.name || "task") + " ", badge(t.state)),
      el("div", {class: "row"}, revoke, terminate),
      el("div", {class: "panel"}, el("dl", {class: "kv"},
        kv("id", t.id, {class: "mono"}), kv("name", t.name), kv("state", t.state, {id: "task-state"}),
        kv("received", fmtTime(t.received)), kv("started", fmtTime(t.started)),
        kv("runtime", fmtDuration(t.runtime)), kv("worker", t.worker), kv("queue", t.queue),
        kv("retries", t.retries), kv("eta", fmtTime(t.eta)), kv("revoked", t.revoked ? "yes" : "no"),
        kv("now", held || (ended ? "ended" : "not held by the router")))),
      el("h2", {}, "Relatives"),
      el("dl", {class: "kv", id: "relatives"}, ...relativesOf(t)),
      el("h2", {}, "Arguments"),
      el("pre", {id: "args"}, "args: " + show(t.args === null || t.args === undefined ? "(not seen)" : t.args) +
        "\nkwargs: " + show(t.kwargs === null || t.kwargs === undefined ? "(not seen)" : t.kwargs)),
      ...outcome,
      el("h2", {}, "Timeline"),
      el("ul", {class: "timeline", id: "timeline"}, (t.timeline || []).map(s => el("li", {}, fmtTime(s.ts), " ", badge(s.state)))));
  }
  function relativesOf(t) {
    const names = {parent_id: "sent by", root_id: "first of its line", group_id: "group",
                   chord_id: "part of the chord whose body is"};
    const found = Object.entries(t.relatives || {}).filter(([k, v]) => v && v !== t.id);
    if (!found.length) return [el("dd", {}, "none known")];
    return found.flatMap(([k, v]) => [el("dt", {}, names[k] || k),
      el("dd", {class: "mono"}, k === "group_id" ? v : el("a", {href: "/task/" + encodeURIComponent(v)}, v))]);
  }
  const later = throttle(() => refresh().catch(e => toast(e.message, true)), 500);
  onLive(message => { if ((message.tasks || []).some(t => t.id === id)) later(); });
  later();
}

// -- workers ------------------------------------------------------------------------------------

function workersPage() {
  const box = el("div", {id: "hosts"});
  const limits = el("div", {class: "panel", id: "limits"});
  mount(el("h1", {}, "Workers"), box, limits);
  let lastPoll = -1;
  async function refresh() {
    const data = await getJSON("/api/hosts");
    box.replaceChildren(...data.hosts.map(host => hostSection(host, data.actors)));
    if (!limits.dataset.filled) fillLimits(data.registered);
  }
  function hostSection(host, actors) {
    const n = el("input", {type: "number", min: 1, max: 64, value: 1, style: "width:60px", "aria-label": "how many"});
    const many = () => Number(n.value) || 1;
    const name = encodeURIComponent(host.name);
    const mine = host.actors.map(a => actors[a]).filter(Boolean);
    const addQueue = el("input", {placeholder: "queue", size: 12});
    return el("section", {class: "panel host", "data-host": host.name},
      el("h2", {}, host.name),
      el("div", {class: "row"},
        el("span", {}, "pool size ", el("b", {class: "pool-size"}, host.pool_size ?? mine.length)),
        el("span", {class: "muted"}, "pid " + (host.pid ?? "?") + " · up " + fmtDuration(host.uptime) +
          (host.autoscale ? " · autoscale " + JSON.stringify(host.autoscale) : "")),
        n,
        el("button", {class: "grow", onclick: () => act("/api/worker/pool/grow/" + name, {n: many()}, "Start " + many() + " more actors on " + host.name + "?")}, "Grow"),
        el("button", {class: "shrink", onclick: () => act("/api/worker/pool/shrink/" + name, {n: many()}, "Stop " + many() + " actors of " + host.name + "?")}, "Shrink"),
        addQueue,
        el("button", {onclick: () => addQueue.value && act("/api/worker/queue/add-consumer/" + name, {queue: addQueue.value}, "Consume " + addQueue.value + " on " + host.name + "?")}, "Add queue"),
        el("button", {class: "danger", onclick: () => act("/api/worker/shutdown/" + name, {}, "Shut " + host.name + " down (warm)?")}, "Shut down")),
      el("table", {}, el("thead", {}, el("tr", {}, ["Actor", "Pid", "Running", "Processed", "Tasks/s", "Up", "Queues"].map(h => el("th", {}, h)))),
        el("tbody", {}, mine.map(actorRow))));
  }
  function actorRow(a) {
    const cancel = q => el("button", {title: "stop consuming " + q, onclick: () => act(
      "/api/worker/queue/cancel-consumer/" + encodeURIComponent(a.name), {queue: q},
      "Stop " + a.name + " consuming " + q + "?")}, "×");
    const running = a.running
      ? el("a", {href: "/task/" + encodeURIComponent(a.running.id)}, a.running.name)
      : el("span", {class: "muted"}, "idle");
    return el("tr", {"data-actor": a.name},
      el("td", {class: "mono"}, a.name), el("td", {}, a.pid), el("td", {}, running),
      el("td", {}, a.processed), el("td", {}, a.rate), el("td", {}, fmtDuration(a.uptime)),
      el("td", {}, a.queues.map(q => el("span", {}, q, " ", cancel(q), " "))));
  }
  function fillLimits(registered) {
    limits.dataset.filled = "1";
    const names = el("datalist", {id: "task-names"}, registered.map(n => el("option", {value: n})));
    const task1 = el("input", {list: "task-names", placeholder: "task name", size: 30});
    const rate = el("input", {placeholder: "10/s, 100/m, 0", size: 10});
    const task2 = el("input", {list: "task-names", placeholder: "task name", size: 30});
    const soft = el("input", {placeholder: "soft s", size: 6});
    const hard = el("input", {placeholder: "hard s", size: 6});
    limits.replaceChildren(el("h2", {}, "Limits (every worker)"), names,
      el("form", {class: "filters", id: "rate-form", onsubmit: (e) => { e.preventDefault();
        act("/api/task/rate-limit/" + encodeURIComponent(task1.value), {ratelimit: rate.value}, "Rate limit " + task1.value + " to " + rate.value + "?"); }},
        el("label", {}, "Task", task1), el("label", {}, "Rate limit", rate), el("button", {type: "submit"}, "Set rate limit")),
      el("form", {class: "filters", id: "time-form", onsubmit: (e) => { e.preventDefault();
        act("/api/task/timeout/" + encodeURIComponent(task2.value), {soft: soft.value, hard: hard.value}, "Time limits of " + task2.value + ": soft " + (soft.value || "none") + ", hard " + (hard.value || "none") + "?"); }},
        el("label", {}, "Task", task2), el("label", {}, "Soft", soft), el("label", {}, "Hard", hard), el("button", {type: "submit"}, "Set time limits")));
  }
  const later = throttle(() => refresh().catch(e => toast(e.message, true)), 500);
  onLive(message => { if (message.summary && message.summary.poll_seq !== lastPoll) { lastPoll = message.summary.poll_seq; later(); } });
  later();
}

// -- queues -------------------------------------------------------------------------------------

function queuesPage() {
  const rows = el("tbody", {id: "queue-rows"});
  const waiting = el("div", {id: "waiting"});
  const chart = el("canvas", {id: "chart-depths"});
  const chartLegend = el("div");
  mount(el("h1", {}, "Queues"),
    el("table", {id: "queues"}, el("thead", {}, el("tr", {}, ["Queue", "Depth", "Tasks/s", "Consumers", ""].map(h => el("th", {}, h)))), rows),
    waiting, el("div", {class: "panel"}, el("h2", {}, "Depth over time"), chartLegend, chart));
  async function showWaiting(name) {
    const data = await getJSON("/api/queues/waiting/" + encodeURIComponent(name) + "?n=20");
    waiting.replaceChildren(el("div", {class: "panel"}, el("h2", {}, "Next in " + name + " (" + data.size + " waiting)"),
      el("table", {}, el("thead", {}, el("tr", {}, ["#", "Name", "Id", "Priority", "Waiting", "Retries"].map(h => el("th", {}, h)))),
        el("tbody", {}, data.tasks.map((t, i) => el("tr", {}, el("td", {}, i + 1), el("td", {}, t.name),
          el("td", {class: "mono"}, el("a", {href: "/task/" + encodeURIComponent(t.id)}, t.id)),
          el("td", {}, t.priority), el("td", {}, fmtDuration(t.age_s)), el("td", {}, t.retries)))))));
  }
  async function refresh() {
    const [data, overview] = await Promise.all([getJSON("/api/queues"), getJSON("/api/overview")]);
    rows.replaceChildren(...data.queues.map(q => el("tr", {"data-queue": q.name},
      el("td", {}, q.name), el("td", {class: "depth"}, q.depth), el("td", {}, q.rate),
      el("td", {class: "mono"}, q.consumers.join(", ")),
      el("td", {}, el("button", {onclick: () => showWaiting(q.name).catch(e => toast(e.message, true))}, "Waiting"), " ",
        el("button", {class: "danger", onclick: () => act("/api/queues/purge/" + encodeURIComponent(q.name), {confirm: true},
          "Drop every task waiting in " + q.name + " (" + q.depth + " now)? They end REVOKED.").then(refresh)}, "Purge")))));
    const samples = overview.series.depths;
    const names = data.queues.map(q => q.name);
    const lines = names.map((q, i) => ({name: q, color: COLORS[i % COLORS.length], values: samples.map(p => p.depths[q] || 0)}));
    chartLegend.replaceChildren(legend(lines));
    drawLines(chart, samples.map(p => p.t), lines, {label: clockS});
  }
  let lastPoll = -1;
  const later = throttle(() => refresh().catch(e => toast(e.message, true)), 1000);
  onLive(message => { if (message.summary && message.summary.poll_seq !== lastPoll) { lastPoll = message.summary.poll_seq; later(); } });
  later();
}

// -- start ------------------------------------------------------------------------------------

for (const link of document.querySelectorAll("[data-nav]")) {
  if (link.dataset.nav === PAGE || (PAGE === "task" && link.dataset.nav === "tasks")) link.classList.add("active");
}
({overview: overviewPage, tasks: tasksPage, task: taskPage, workers: workersPage, queues: queuesPage})[PAGE]();
startLive();

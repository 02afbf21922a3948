// The dashboard page: reads the dashboard's JSON and redraws the open tab
// every two seconds. Plain DOM, no build step.
"use strict";

const REFRESH_MS = 2000;
const EVENT_ROWS = 50;
let current = "cluster";
let timer = null;

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else if (key === "onclick") node.addEventListener("click", value);
    else node[key] = value;
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function getJSON(path) {
  const reply = await fetch(path, { credentials: "same-origin" });
  if (reply.status === 401) { location.reload(); throw new Error("unauthenticated"); }
  if (!reply.ok) throw new Error(`${path}: ${reply.status}`);
  return reply.json();
}

const short = (id) => (id ? id.slice(0, 12) : "");
// Task ids start with their owner's prefix: the end tells them apart.
const tail = (id) => (id ? `…${id.slice(-10)}` : "");
const badge = (state) => el("span", { class: `badge ${state}` }, state);

function bytes(n) {
  if (!n) return "0 B";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(n < 10 && i ? 1 : 0)} ${units[i]}`;
}

function bar(used, total, label) {
  const share = total > 0 ? Math.min(100, (100 * used) / total) : 0;
  const fill = el("span");
  fill.style.width = `${share}%`;
  return el("span", {}, el("span", { class: "bar" }, fill), label);
}

function fillTable(selector, rows) {
  const body = $(`${selector} tbody`);
  body.replaceChildren(...rows);
  if (!rows.length) {
    const cols = $(`${selector} thead tr`).children.length;
    body.append(el("tr", { class: "empty" }, el("td", { colSpan: cols, class: "muted" }, "none")));
  }
}

function cards(selector, entries) {
  $(selector).replaceChildren(
    ...entries.map(([name, value]) => el("div", { class: "card", "data-card": name }, el("b", {}, value), name)),
  );
}

function logLink(query, text = "log") {
  return el("a", { onclick: () => openLog(query) }, text);
}

function stackLink(pid) {
  return el("a", { class: "stack-link", onclick: () => openStack(pid) }, "stack");
}

// -- tabs ---------------------------------------------------------------------------------

async function drawCluster() {
  const data = await getJSON("/api/cluster");
  const alive = data.nodes.filter((n) => n.state === "ALIVE");
  let cpus = 0, freeCpus = 0, store = 0, storeUsed = 0;
  for (const n of alive) {
    cpus += n.resources_total.CPU || 0;
    freeCpus += n.resources_available.CPU || 0;
    store += n.object_store_memory_bytes;
    storeUsed += n.object_store_used_bytes;
  }
  cards("#cluster-summary", [
    ["nodes alive", alive.length],
    ["CPUs in use", `${(cpus - freeCpus).toFixed(1)} / ${cpus}`],
    ["object store", `${bytes(storeUsed)} / ${bytes(store)}`],
  ]);
  $("#status").textContent = `gcs ${data.gcs_address}`;
  fillTable("#nodes-table", data.nodes.map((n) => {
    const total = n.resources_total, free = n.resources_available;
    const cpu = total.CPU || 0, usedCpu = cpu - (free.CPU || 0);
    const mem = total.memory || 0, usedMem = mem - (free.memory || 0);
    const others = Object.entries(total)
      .filter(([k]) => !["CPU", "memory", "object_store_memory"].includes(k) && !k.startsWith("node:"))
      .map(([k, v]) => `${k}: ${(v - (free[k] || 0)).toFixed(1)}/${v}`).join(", ");
    return el("tr", { "data-node-id": n.node_id, "data-state": n.state },
      el("td", { class: "id" }, short(n.node_id), n.is_head_node ? " (head)" : ""),
      el("td", {}, `${n.node_ip}:${n.raylet_port}`),
      el("td", {}, badge(n.state)),
      el("td", {}, bar(usedCpu, cpu, `${usedCpu.toFixed(1)} / ${cpu}`)),
      el("td", {}, bar(usedMem, mem, `${bytes(usedMem)} / ${bytes(mem)}`)),
      el("td", {}, bar(n.object_store_used_bytes, n.object_store_memory_bytes,
        `${bytes(n.object_store_used_bytes)} / ${bytes(n.object_store_memory_bytes)}`)),
      el("td", { class: "wrap" }, others));
  }));
  // The cluster's latest events, newest first.
  const events = (await getJSON("/api/cluster_events")).slice(-EVENT_ROWS).reverse();
  fillTable("#events-table", events.map((e) => el("tr", { "data-severity": e.severity },
    el("td", {}, e.time), el("td", {}, badge(e.severity)), el("td", {}, e.source_type),
    el("td", { class: "wrap" }, e.message))));
}

async function drawJobs() {
  const jobs = await getJSON("/api/jobs");
  const when = (ms) => (ms ? new Date(ms).toLocaleTimeString() : "");
  fillTable("#jobs-table", jobs.map((j) => el("tr", { "data-job-id": j.job_id, "data-state": j.status },
    el("td", { class: "id" }, j.job_id), el("td", {}, badge(j.status)),
    el("td", { class: "wrap" }, j.entrypoint), el("td", {}, `pid ${j.driver_info.pid} on ${j.driver_info.node_ip_address}`),
    el("td", {}, when(j.start_time)), el("td", {}, when(j.end_time)))));
}

async function drawActors() {
  const actors = await getJSON("/api/actors");
  const counts = {};
  for (const a of actors) counts[a.state] = (counts[a.state] || 0) + 1;
  cards("#actor-summary", Object.entries(counts));
  fillTable("#actors-table", actors.map((a) => el("tr", { "data-actor-id": a.actor_id, "data-state": a.state },
    el("td", { class: "id" }, short(a.actor_id)), el("td", {}, a.class_name), el("td", {}, a.name),
    el("td", {}, badge(a.state)), el("td", { class: "id" }, short(a.node_id)), el("td", {}, a.pid || ""),
    el("td", {}, a.num_restarts), el("td", { class: "wrap" }, a.death_cause || ""),
    el("td", {}, ...(a.pid && a.state === "ALIVE"
      ? [logLink({ actor_id: a.actor_id }), " ", stackLink(a.pid)]
      : [a.pid ? logLink({ actor_id: a.actor_id }) : ""])))));
}

async function drawTasks() {
  const form = new FormData($("#task-filter"));
  const query = new URLSearchParams();
  for (const [key, value] of form) if (value) query.set(key, value);
  const [data, summary] = await Promise.all([
    getJSON(`/api/tasks?${query}`), getJSON("/api/summary"),
  ]);
  const totals = {};
  for (const entry of Object.values(summary.tasks.cluster.summary)) {
    for (const [state, n] of Object.entries(entry.state_counts)) totals[state] = (totals[state] || 0) + n;
  }
  cards("#task-summary", Object.entries(totals));
  $("#task-count").textContent = `${data.rows.length} of ${data.total} shown` +
    (data.dropped ? `; ${data.dropped} dropped by the cluster` : "");
  fillTable("#tasks-table", data.rows.map((t) => {
    const end = t.end_time_ms || (t.start_time_ms ? Date.now() : null);
    const took = t.start_time_ms && end ? `${((end - t.start_time_ms) / 1000).toFixed(3)} s` : "";
    return el("tr", { "data-task-id": t.task_id, "data-state": t.state, "data-name": t.name },
      el("td", { class: "id", title: t.task_id }, tail(t.task_id)), el("td", {}, t.attempt_number), el("td", {}, t.name),
      el("td", {}, badge(t.state)), el("td", {}, t.type), el("td", { class: "id" }, short(t.node_id)),
      el("td", {}, t.worker_pid || ""), el("td", {}, took),
      el("td", { class: "wrap", title: t.error_message || "" }, t.error_type || ""),
      el("td", {}, ...(t.worker_pid && t.state === "RUNNING"
        ? [logLink({ task_id: t.task_id }), " ", stackLink(t.worker_pid)]
        : [t.worker_pid ? logLink({ task_id: t.task_id }) : ""])));
  }));
}

function colour(name) {
  let h = 0;
  for (const c of name) h = (h * 31 + c.charCodeAt(0)) % 360;
  return `hsl(${h}, 60%, 55%)`;
}

async function drawTimeline() {
  const events = await getJSON("/api/timeline");
  const threads = new Map();
  const slices = [];
  for (const e of events) {
    if (e.ph === "M" && e.name === "thread_name") threads.set(`${e.pid}/${e.tid}`, e.args.name);
    if (e.ph === "X") {
      // Still running: its bar grows to now.
      if (e.args.state === "RUNNING" && !e.dur) e.dur = Math.max(0, Date.now() * 1000 - e.ts);
      slices.push(e);
    }
  }
  const chart = $("#timeline-chart");
  const svgNS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNS, "svg");
  const width = Math.max(600, chart.clientWidth || 900), rowH = 22, left = 260;
  const rows = [...threads.keys()];
  svg.setAttribute("width", width);
  svg.setAttribute("height", Math.max(40, rows.length * rowH + 30));
  if (!slices.length) { chart.replaceChildren(el("p", { class: "muted" }, "no task has run yet")); return; }
  const end = Math.max(...slices.map((s) => s.ts + s.dur));
  const start = Math.max(Math.min(...slices.map((s) => s.ts)), end - 60e6);
  const scale = (width - left - 10) / Math.max(1, end - start);
  rows.forEach((key, i) => {
    const label = document.createElementNS(svgNS, "text");
    label.setAttribute("x", 6); label.setAttribute("y", i * rowH + 15);
    label.setAttribute("font-size", "11"); label.textContent = threads.get(key);
    svg.append(label);
  });
  for (const s of slices) {
    if (s.ts + s.dur < start) continue;
    const row = rows.indexOf(`${s.pid}/${s.tid}`);
    const rect = document.createElementNS(svgNS, "rect");
    rect.setAttribute("x", left + Math.max(0, s.ts - start) * scale);
    rect.setAttribute("y", row * rowH + 3);
    rect.setAttribute("width", Math.max(1.5, s.dur * scale));
    rect.setAttribute("height", rowH - 6);
    rect.setAttribute("fill", colour(s.name));
    rect.setAttribute("class", "slice");
    rect.setAttribute("data-name", s.name);
    const title = document.createElementNS(svgNS, "title");
    title.textContent = `${s.name} (${s.args.state}) ${(s.dur / 1000).toFixed(2)} ms, task ${s.args.task_id}`;
    rect.append(title);
    svg.append(rect);
  }
  chart.replaceChildren(svg);
}

async function drawLogs() {
  const listing = await getJSON("/api/logs");
  const blocks = [];
  for (const [node, files] of Object.entries(listing)) {
    blocks.push(el("h4", {}, `node ${short(node)}`));
    for (const f of files) {
      const label = `${f.name} (${bytes(f.size)})`;
      blocks.push(logLink({ node_id: node, name: f.name }, label));
    }
  }
  $("#log-files").replaceChildren(...blocks);
}

async function openLog(query) {
  show("logs");
  const params = new URLSearchParams({ ...query, tail: "1000" });
  const data = await getJSON(`/api/log?${params}`).catch((e) => ({ error: String(e) }));
  if (data.error) { $("#log-title").textContent = data.error; $("#log-view").textContent = ""; return; }
  $("#log-title").textContent = `${data.name} on node ${short(data.node_id)}`;
  $("#log-view").textContent = data.lines.join("\n");
}

async function openStack(pid) {
  show("logs");
  const data = await getJSON(`/api/stacks?pid=${pid}`).catch((e) => ({ error: String(e) }));
  $("#log-title").textContent = data.error || `stacks of process ${pid}, now`;
  $("#log-view").textContent = data.text || "";
}

const DRAW = {
  cluster: drawCluster, jobs: drawJobs, actors: drawActors, tasks: drawTasks,
  timeline: drawTimeline, logs: drawLogs,
};

async function refresh() {
  try {
    await DRAW[current]();
    document.body.dataset.loaded = current;
  } catch (e) {
    $("#status").textContent = `error: ${e.message}`;
  }
}

function show(tab) {
  current = tab;
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.tab === tab);
  for (const s of document.querySelectorAll(".tab")) s.classList.toggle("active", s.id === tab);
  if (tab !== "logs") refresh();
  else drawLogs();
}

for (const b of document.querySelectorAll("#tabs button")) b.addEventListener("click", () => show(b.dataset.tab));
$("#task-filter").addEventListener("input", () => refresh());
$("#task-filter").addEventListener("submit", (e) => e.preventDefault());
const initial = location.hash.slice(1);
show(DRAW[initial] ? initial : "cluster");
timer = setInterval(() => { if (current !== "logs") refresh(); }, REFRESH_MS);

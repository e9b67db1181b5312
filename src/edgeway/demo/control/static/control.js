// The edgeway control room: a small page over the JSON API of the demo's control-room server.
// No framework and nothing from the internet: the topology, the waterfalls and the charts are
// SVG and HTML written here. /api/state is read every second, the traces every two.
"use strict";

const $ = (sel) => document.querySelector(sel);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const fmt = (n, digits = 1) => (n === null || n === undefined ? "—" : Number(n).toLocaleString("en", { maximumFractionDigits: digits }));
const NODE_COLORS = { client: "#6b5b95", edge: "#1f6feb", service: "#2a9d8f", broker: "#e76f51" };
const PATTERN_COLORS = { "Direct": "#c0392b", "API gateway": "#1f6feb", "web BFF": "#2a9d8f", "mobile BFF": "#e9a23b" };
const FLAG_HELP = {
  "payments.fail": "payments declines every charge: orders are compensated (cancelled, stock released)",
  "strangler.account-profile": "the edges move /account/profile from the legacy monolith to the profile service in steps (10 → 50 → 100 %); off: back at once",
};

async function getJson(url, options = {}) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), options.timeout || 10000);
  try {
    const response = await fetch(url, { ...options, signal: controller.signal });
    const body = await response.json().catch(() => null);
    if (!response.ok) throw new Error((body && (body.detail || body.title)) || `HTTP ${response.status}`);
    return body;
  } catch (e) {
    if (e.name === "AbortError") throw new Error(`${url} did not answer in time`);
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

// -- topology ------------------------------------------------------------------------------------

const W = 960, H = 430, BOX_W = 150, BOX_H = 42;
const COLUMN_X = { client: 20, edge: 270, service: 540, broker: 790 };
const COLUMN_TITLE = { client: "clients", edge: "edges", service: "services", broker: "broker" };

function layout(nodes) {
  const columns = {};
  for (const n of nodes) (columns[n.column] = columns[n.column] || []).push(n);
  const place = {};
  for (const [column, list] of Object.entries(columns)) {
    const step = (H - 30) / list.length;
    list.forEach((n, i) => { place[n.id] = { x: COLUMN_X[column], y: 30 + step * i + (step - BOX_H) / 2, column }; });
  }
  return place;
}

function nodeHealth(node, health) {
  const procs = (health.processes || []).filter((p) => node.instances.includes(p.name));
  if (procs.some((p) => p.state !== "ready" || p.ready === false)) {
    return procs.every((p) => p.state !== "ready" || p.ready === false) ? "down" : "degraded";
  }
  for (const rows of Object.values(health.breakers || {})) {
    for (const row of rows) {
      if (row.process && node.instances.includes(row.process) && (row.breaker === "open" || row.available === false)) return "degraded";
    }
  }
  return "";
}

function linkPath(a, b) {
  let x1, y1, x2, y2;
  const ay = a.y + BOX_H / 2, by = b.y + BOX_H / 2;
  if (a.x < b.x) { x1 = a.x + BOX_W; x2 = b.x; }
  else if (a.x > b.x) { x1 = a.x; x2 = b.x + BOX_W; }
  else { // same column: bulge out to the right
    x1 = a.x + BOX_W; x2 = b.x + BOX_W;
    return `M${x1},${ay} C${x1 + 60},${ay} ${x2 + 60},${by} ${x2},${by}`;
  }
  y1 = ay; y2 = by;
  const mid = (x1 + x2) / 2;
  return `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`;
}

function renderTopology(state) {
  const place = layout(state.nodes);
  const parts = [];
  for (const [column, x] of Object.entries(COLUMN_X)) {
    if (state.nodes.some((n) => n.column === column)) parts.push(`<text class="column-title" x="${x}" y="16">${COLUMN_TITLE[column]}</text>`);
  }
  for (const link of state.links) {
    const a = place[link.source], b = place[link.target];
    if (!a || !b) continue;
    const width = Math.min(9, 1.5 + Math.log2(1 + link.calls) * 0.8 + link.rate);
    const cls = ["link", link.rate > 0 ? "active" : "", link.errors ? "errors" : ""].join(" ");
    parts.push(`<path class="${cls}" d="${linkPath(a, b)}" stroke-width="${width.toFixed(1)}" data-testid="link-${esc(link.source)}-${esc(link.target)}">
      <title>${esc(link.source)} → ${esc(link.target)}: ${link.calls} calls, ${fmt(link.rate, 2)}/s${link.errors ? `, ${link.errors} failed` : ""}</title></path>`);
  }
  for (const node of state.nodes) {
    const p = place[node.id];
    const stats = state.stats[node.id];
    const seen = stats || state.links.some((l) => l.source === node.id || l.target === node.id);
    const cls = ["node", node.column, nodeHealth(node, state.health), seen ? "" : "idle"].join(" ");
    const sub = stats ? `${fmt(stats.rate, 1)}/s · p50 ${fmt(stats.p50_ms)} ms${stats.errors ? ` · ${stats.errors} err` : ""}`
      : (node.instances.length > 1 ? `${node.instances.length} instances` : "");
    parts.push(`<g class="${cls}" data-testid="node-${esc(node.id)}" transform="translate(${p.x},${p.y})">
      <rect width="${BOX_W}" height="${BOX_H}"></rect>
      <text x="10" y="17">${esc(node.id)}${node.instances.length > 1 ? ` ×${node.instances.length}` : ""}</text>
      <text class="sub" x="10" y="33">${esc(sub)}</text>
      <title>${esc(node.id)}${node.instances.length ? ": " + esc(node.instances.join(", ")) : ""}</title></g>`);
  }
  $("#topology").innerHTML = parts.join("");
}

// -- tables --------------------------------------------------------------------------------------

function renderStats(state) {
  const order = state.nodes.map((n) => n.id);
  const rows = Object.entries(state.stats).sort((a, b) => order.indexOf(a[0]) - order.indexOf(b[0]));
  $("#stats").innerHTML = `<tr><th>node</th><th class="num">req/s</th><th class="num">requests</th><th class="num">5xx</th><th class="num">4xx</th><th class="num">p50 ms</th><th class="num">p95 ms</th></tr>` +
    (rows.map(([node, s]) => `<tr data-testid="stats-${esc(node)}"><td>${esc(node)}</td><td class="num">${fmt(s.rate, 2)}</td><td class="num">${s.requests}</td>
      <td class="num ${s.errors ? "error" : ""}">${s.errors}</td><td class="num">${s.rejected}</td><td class="num">${fmt(s.p50_ms)}</td><td class="num">${fmt(s.p95_ms)}</td></tr>`).join("")
      || `<tr><td colspan="7" class="muted">no requests yet: open the shop</td></tr>`);
}

function renderHealth(health) {
  const procs = (health.processes || []).map((p) => `<tr data-testid="process-${esc(p.name)}"><td>${esc(p.name)}</td>
    <td class="state-${esc(p.state)}">${esc(p.state)}</td>
    <td>${p.ready === null || p.ready === undefined ? "" : p.ready ? "ready ✓" : '<span class="error">not ready</span>'}</td>
    <td class="num">${p.restarts ? `${p.restarts} restart${p.restarts > 1 ? "s" : ""}` : ""}</td></tr>`).join("");
  // One row per instance, one column per edge: what each edge's breaker and balancer think of it.
  const edges = Object.keys(health.breakers || {}).sort();
  const rows = {};
  for (const edge of edges) {
    for (const r of health.breakers[edge]) {
      const key = `${r.service} ${r.process || r.instance}`;
      (rows[key] = rows[key] || { service: r.service, instance: r.process || r.instance, by: {} }).by[edge] = r;
    }
  }
  const cell = (r) => !r ? `<td class="muted">—</td>` :
    `<td><span class="breaker-${esc(r.breaker || "none")}">${esc(r.breaker || "no breaker")}</span>${r.available === false ? ' · <span class="error">out of the balancer</span>' : ""}</td>`;
  const matrix = edges.length ? `<table data-testid="breakers"><tr><th>service</th><th>instance</th>${edges.map((e) => `<th>at ${esc(e)}</th>`).join("")}</tr>
    ${Object.values(rows).sort((a, b) => (a.service + a.instance).localeCompare(b.service + b.instance)).map((r) =>
      `<tr data-testid="breaker-${esc(r.instance)}"><td>${esc(r.service)}</td><td>${esc(r.instance)}</td>${edges.map((e) => cell(r.by[e])).join("")}</tr>`).join("")}</table>`
    : `<p class="muted">no edge reports breakers${health.updated ? "" : " yet"}</p>`;
  const errors = Object.entries(health.edge_errors || {}).map(([e, m]) => `<p class="error">${esc(e)}: ${esc(m)}</p>`).join("");
  $("#health").innerHTML = `<div class="health-grid"><table><tr><th>process</th><th>state</th><th>probe</th><th></th></tr>${procs}</table><div>${matrix}${renderStrangler(health.strangler || {})}${errors}</div></div>`;
}

// The progressive strangler's rules as each edge applies them (they share one state, so the
// edges agree; a row per edge shows that they do): step, share on the new side, status.
function renderStrangler(byEdge) {
  const rows = Object.keys(byEdge).sort().flatMap((edge) => byEdge[edge].map((r) => {
    const steps = (r.steps || []).map((p, i) => i === r.step ? `<b>${fmt(p, 0)}</b>` : fmt(p, 0)).join(" → ");
    return `<tr data-testid="strangler-${esc(edge)}-${esc(r.route)}"><td>${esc(r.route)}</td><td>${esc(edge)}</td>
      <td class="num">${fmt(r.percent, 0)} %</td><td>${steps}</td><td class="state-${esc(r.status)}">${esc(r.status)}</td>
      <td class="muted">${esc(r.reason || "")}${r.rollbacks ? ` · ${r.rollbacks} rollback${r.rollbacks > 1 ? "s" : ""}` : ""}</td></tr>`;
  })).join("");
  return rows ? `<table data-testid="strangler"><tr><th>strangler</th><th>edge</th><th class="num">to new</th><th>steps</th><th>status</th><th></th></tr>${rows}</table>` : "";
}

let flagsBusy = false;
function renderFlags(state) {
  if (flagsBusy) return;
  const err = $("#flags-error");
  err.hidden = !state.flags_error;
  err.textContent = state.flags_error ? `cannot follow the flags: ${state.flags_error}` : "";
  const entries = Object.entries(state.flags || {});
  const html = entries.map(([name, value]) => {
    const boolean = typeof value === "boolean";
    return `<div class="flag"><div><code>${esc(name)}</code>${boolean ? "" : ` = <code>${esc(JSON.stringify(value))}</code>`}
      <p>${esc(FLAG_HELP[name] || "")}</p></div>
      <label class="switch" title="${esc(name)}"><input type="checkbox" data-flag="${esc(name)}" data-testid="flag-${esc(name)}" ${value === true ? "checked" : ""}><span></span></label></div>`;
  }).join("") || `<p class="muted">no flags yet</p>`;
  const box = $("#flags");
  if (box.dataset.html !== html) { box.innerHTML = html; box.dataset.html = html; }
  // A click moved a switch the markup did not: the state says where each one is.
  for (const input of box.querySelectorAll("input[data-flag]")) input.checked = state.flags[input.dataset.flag] === true;
}

$("#flags").addEventListener("change", async (event) => {
  const name = event.target.dataset.flag;
  if (!name) return;
  flagsBusy = true;
  const value = event.target.checked;
  try {
    await getJson(`/api/flags/${encodeURIComponent(name)}`, { method: "PUT", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ value }) });
  } catch (e) {
    event.target.checked = !value;
    $("#flags-error").hidden = false;
    $("#flags-error").textContent = `${name}: ${e.message}`;
  } finally {
    flagsBusy = false;
  }
});

// -- traces --------------------------------------------------------------------------------------

let selectedTrace = null;  // null: follow the newest
function renderTraceList(traces) {
  $("#traces").innerHTML = `<tr><th>when</th><th>entered at</th><th>nodes</th><th class="num">hops</th><th class="num">ms</th></tr>` +
    (traces.map((t) => `<tr data-trace="${esc(t.trace_id)}" data-testid="trace-row" class="${t.trace_id === selectedTrace ? "selected" : ""}">
      <td>${new Date(t.start * 1000).toLocaleTimeString()}</td><td class="root ${t.error ? "error" : ""}" title="${esc(t.root)}">${esc(t.root)}</td>
      <td>${esc(t.nodes.join(" → "))}</td><td class="num">${t.hops}</td><td class="num">${fmt(t.duration_ms)}</td></tr>`).join("")
      || `<tr><td colspan="5" class="muted">no traces yet: open the shop and click around</td></tr>`);
}

$("#hide-single").addEventListener("change", () => refreshTraces());
$("#traces").addEventListener("click", (event) => {
  const row = event.target.closest("tr[data-trace]");
  if (!row) return;
  selectedTrace = row.dataset.trace;
  refreshTraces();
});

function renderWaterfall(trace) {
  const total = Math.max(trace.duration_ms, 0.001);
  const nodes = [...new Set(trace.spans.map((s) => s.node))];
  const palette = ["#1f6feb", "#2a9d8f", "#e76f51", "#6b5b95", "#e9a23b", "#c0392b", "#3d7ea6", "#8a4b22", "#5c946e"];
  const color = (node) => palette[nodes.indexOf(node) % palette.length];
  const rows = trace.spans.map((s) => {
    const left = (s.start_ms / total) * 100, width = Math.max((s.duration_ms / total) * 100, 0.3);
    const detail = [s.kind, s.status ? `HTTP ${s.status}` : "", s.source === "log" ? "from the access log" : "span",
      ...Object.entries(s.attributes || {}).filter(([, v]) => v !== null).map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`),
      ...(s.events || []).map((e) => `event: ${e}`)].filter(Boolean).join("\n");
    return `<div class="wf-row" data-testid="span-row" data-node="${esc(s.node)}">
      <div class="wf-label" style="padding-left:${s.depth * 12}px" title="${esc(detail)}"><b>${esc(s.node)}</b> ${esc(s.name)}</div>
      <div class="wf-track"><div class="wf-bar ${s.source === "log" ? "log" : ""} ${s.error ? "error" : ""}" data-testid="span-bar"
        style="left:${left.toFixed(2)}%;width:${width.toFixed(2)}%;background-color:${color(s.node)}" title="${esc(detail)}"></div></div>
      <div class="wf-dur">${fmt(s.duration_ms, 2)} ms</div></div>`;
  }).join("");
  $("#waterfall").innerHTML = `<p class="small"><b>${esc(trace.root)}</b> · trace <code data-testid="trace-id">${esc(trace.trace_id)}</code> ·
    ${fmt(trace.duration_ms, 2)} ms · ${trace.spans.length} hops${trace.dropped ? ` (+${trace.dropped} not kept)` : ""}
    <span class="muted">— hatched bars come from access-log lines (a process that exports no spans)</span></p>${rows}`;
}

async function refreshTraces() {
  try {
    let { traces } = await getJson("/api/traces?limit=60");
    if ($("#hide-single").checked) traces = traces.filter((t) => t.hops > 1 || t.trace_id === selectedTrace);
    if (selectedTrace === null && location.hash.startsWith("#trace=")) selectedTrace = location.hash.slice(7);
    if (selectedTrace === null && location.hash.startsWith("#request=")) {
      // from the shop's panel: the trace of the request it made
      const found = await getJson(`/api/requests/${location.hash.slice(9)}`).catch(() => null);
      if (found) selectedTrace = found.trace_id;
    }
    renderTraceList(traces);
    const id = selectedTrace || (traces[0] && traces[0].trace_id);
    if (!id) return;
    renderWaterfall(await getJson(`/api/traces/${id}`));
  } catch (e) {
    $("#waterfall").innerHTML = `<p class="error">${esc(e.message)}</p>`;
  }
}

// -- the patterns ----------------------------------------------------------------------------------

const SCREENS = ["home", "product"];
const PATTERNS = ["Direct", "API gateway", "web BFF", "mobile BFF"];

function barChart(title, rows, key, unit, testid, floor = 0) {
  const cw = 300, ch = 190, left = 34, bottom = 28, top = 14;
  const max = Math.max(1, floor, ...rows.map((r) => r[key]));
  const groupW = (cw - left) / SCREENS.length, barW = Math.min(28, (groupW - 16) / PATTERNS.length);
  const scale = (v) => ((ch - bottom - top) * v) / max;
  const parts = [`<line x1="${left}" y1="${ch - bottom}" x2="${cw}" y2="${ch - bottom}" stroke="#ccd"/>`];
  SCREENS.forEach((screen, gi) => {
    const gx = left + gi * groupW + 8;
    parts.push(`<text x="${gx + (PATTERNS.length * barW) / 2}" y="${ch - 8}" text-anchor="middle">${screen}</text>`);
    PATTERNS.forEach((pattern, pi) => {
      const row = rows.find((r) => r.screen === screen && r.pattern === pattern);
      if (!row) return;
      const h = scale(row[key]), x = gx + pi * barW, y = ch - bottom - h;
      parts.push(`<rect x="${x}" y="${y}" width="${barW - 3}" height="${h}" fill="${PATTERN_COLORS[pattern]}"><title>${pattern} ${screen}: ${fmt(row[key])} ${unit}</title></rect>`);
      parts.push(`<text class="sub" data-testid="${testid}-value" x="${x + (barW - 3) / 2}" y="${y - 3}" text-anchor="middle">${fmt(row[key], key === "p50_ms" ? 0 : 0)}</text>`);
    });
  });
  if (floor > 0) {  // what any screen pays at this round trip: one client round trip
    const y = ch - bottom - scale(floor);
    parts.push(`<line x1="${left}" y1="${y}" x2="${cw}" y2="${y}" stroke="#555" stroke-dasharray="4 3"/>`);
    title += ` <small class="muted">(dashed: one ${fmt(floor, 0)} ms round trip)</small>`;
  }
  return `<div class="chart" data-testid="${testid}"><h4>${title}</h4><svg viewBox="0 0 ${cw} ${ch}" width="100%">${parts.join("")}</svg></div>`;
}

function renderPatterns(data) {
  $("#measure").disabled = !!data.running;
  const status = data.running ? "measuring…" : data.error ? `failed: ${data.error}` : data.last ? `measured at ${fmt(data.last.rtt_ms, 0)} ms round trip, ${data.last.loads} loads per screen` : "not measured yet: pick a round trip and Measure";
  $("#patterns-status").textContent = status;
  $("#patterns-status").className = data.error ? "error" : "muted";
  if (data.last) {
    const rows = data.last.screens;
    const legend = `<div class="legend" style="grid-column:1/-1">${PATTERNS.map((p) => `<span><i style="background:${PATTERN_COLORS[p]}"></i>${p}</span>`).join("")}</div>`;
    $("#patterns-charts").innerHTML = legend + barChart("latency per screen, p50 (ms)", rows, "p50_ms", "ms", "chart-latency", data.last.rtt_ms)
      + barChart("bytes per screen", rows, "bytes_per_screen", "bytes", "chart-bytes")
      + barChart("client calls per screen", rows, "calls_per_screen", "calls", "chart-calls");
    $("#patterns-table").innerHTML = `<tr><th>pattern</th><th>screen</th><th class="num">calls</th><th class="num">bytes</th><th class="num">p50 ms</th><th class="num">p99 ms</th><th class="num">errors</th></tr>` +
      rows.map((r) => `<tr data-testid="patterns-row"><td>${esc(r.pattern)}</td><td>${esc(r.screen)}</td><td class="num">${r.calls_per_screen}</td>
        <td class="num">${fmt(r.bytes_per_screen, 0)}</td><td class="num">${fmt(r.p50_ms)}</td><td class="num">${fmt(r.p99_ms)}</td>
        <td class="num ${r.errors ? "error" : ""}">${r.errors}${r.first_error ? ` <span title="${esc(r.first_error)}">ⓘ</span>` : ""}</td></tr>`).join("");
  }
  const columns = [["direct", "Direct"], ["gateway", "API gateway"], ["bff", "BFF"]];
  $("#exposure").innerHTML = `<tr><th>port</th>${columns.map(([, label]) => `<th>${label}</th>`).join("")}</tr>` +
    data.exposure.map((r) => `<tr data-testid="exposure-${esc(r.name)}"><td>${esc(r.name)} <span class="muted">:${r.port}</span></td>
      ${columns.map(([key]) => `<td class="${r[key] ? "yes" : "no"}">${r[key] ? "client reaches it" : "inside"}</td>`).join("")}</tr>`).join("") +
    `<tr><th>ports a client reaches</th>${columns.map(([key]) => `<th data-testid="exposed-${key}">${data.exposure.filter((r) => r[key]).length}</th>`).join("")}</tr>`;
  $("#proxies").innerHTML = `Through the delay proxies (now at ${fmt(data.rtt_ms, 0)} ms): ` +
    Object.entries(data.proxies).map(([name, url]) => name === "web-bff" ? `<a href="${esc(url)}/" target="_blank">${esc(name)} ${esc(url)}</a>` : `${esc(name)} ${esc(url)}`).join(" · ");
}

async function refreshPatterns() {
  try { renderPatterns(await getJson("/api/patterns")); }
  catch (e) { if (!$("#patterns-panel").hidden) $("#patterns-status").textContent = e.message; }
}

$("#patterns-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("#measure").disabled = true;
  $("#patterns-status").textContent = "measuring…";
  try {
    renderPatterns(await getJson("/api/patterns", {
      method: "POST", headers: { "Content-Type": "application/json" }, timeout: 180000,
      body: JSON.stringify({ rtt_ms: Number($("#rtt").value), loads: Number($("#loads").value) }),
    }));
  } catch (e) {
    $("#patterns-status").textContent = `failed: ${e.message}`;
    $("#patterns-status").className = "error";
    $("#measure").disabled = false;
  }
});

// -- the loop ------------------------------------------------------------------------------------

async function refreshState() {
  try {
    const state = await getJson("/api/state");
    document.querySelector("[data-testid=pattern]").textContent = `pattern: ${state.pattern}`;
    $("#patterns-panel").hidden = state.shop === false;  // measured on the reference shop's screens
    $("#links").innerHTML = Object.entries(state.links_out).map(([label, url]) => `<a href="${esc(url)}" target="_blank">${esc(label)}</a>`).join("");
    $("#received").textContent = `${state.received.spans} spans, ${state.received.lines} log lines read`;
    renderTopology(state);
    renderStats(state);
    renderHealth(state.health);
    renderFlags(state);
  } catch (e) {
    $("#received").innerHTML = `<span class="error">the demo does not answer: ${esc(e.message)}</span>`;
  }
}

refreshState();
refreshTraces();
refreshPatterns();
setInterval(refreshState, 1000);
setInterval(refreshTraces, 2000);

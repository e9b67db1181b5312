// The edgeway shop: one page, two ways to reach the system.
//
//   Direct  (served by the web server): the page calls each service on its own port (they answer
//           CORS for this origin), logs in at the security service, composes each screen from
//           several calls, and polls for order and e-mail job progress.
//   BFF     (served through the web BFF): one origin, endpoints shaped for this page (/api/home,
//           /api/products/{sku} are aggregated at the edge), and live updates pushed over the BFF's
//           WebSocket (topics orders/{id} and jobs/{id}).
//
// The page tells which pattern it runs and what each screen called (who answered, from which
// origin, bytes, time; behind an edge, what the edge called, asked of the demo's control room);
// the footer counts the calls and bytes of the screen and of the whole visit.

const CONFIG = window.SHOP_CONFIG || { mode: "direct", services: {} };
const FINAL = new Set(["confirmed", "cancelled", "failed"]);
// A call that does not answer is given up on, with a message, instead of "Loading…" forever.
const TIMEOUT_MS = Number(localStorage.getItem("shop.timeout_ms")) || 8000;
const CLIENTS = new Set(["browser", "mobile app", "partner"]);  // the control room's client nodes
const $ = (sel) => document.querySelector(sel);
const view = $("#view");

// -- state ---------------------------------------------------------------------------------------

const store = {
  get token() { return sessionStorage.getItem("shop.token"); },
  set token(v) { v ? sessionStorage.setItem("shop.token", v) : sessionStorage.removeItem("shop.token"); },
  get user() { return sessionStorage.getItem("shop.user"); },
  set user(v) { v ? sessionStorage.setItem("shop.user", v) : sessionStorage.removeItem("shop.user"); },
  get cart() { return JSON.parse(localStorage.getItem("shop.cart") || "{}"); },
  set cart(v) { localStorage.setItem("shop.cart", JSON.stringify(v)); renderCartCount(); },
  // name and price of every product shown, so the cart can show them without asking again
  get products() { return JSON.parse(localStorage.getItem("shop.products") || "{}"); },
  remember(list) {
    const known = this.products;
    for (const p of list) if (p && p.sku) known[p.sku] = { name: p.name, price_cents: p.price_cents };
    localStorage.setItem("shop.products", JSON.stringify(known));
  },
  get visit() { return JSON.parse(sessionStorage.getItem("shop.visit") || '{"calls":0,"bytes":0,"screens":0}'); },
  set visit(v) { sessionStorage.setItem("shop.visit", JSON.stringify(v)); },
};

// -- who answered a call -------------------------------------------------------------------------

function originOf(url) { return new URL(url, location.href).origin; }

function whoServes(url) {
  const origin = originOf(url);
  if (origin === location.origin) return CONFIG.mode === "bff" ? (CONFIG.edge || "web BFF") : "web";
  for (const [name, urls] of Object.entries(CONFIG.services || {})) {
    const i = urls.findIndex((u) => originOf(u) === origin);
    if (i >= 0) return urls.length > 1 ? `${name}-${i + 1}` : name;
  }
  if (CONFIG.security && originOf(CONFIG.security) === origin) return "security";
  return origin;
}

// -- HTTP with a meter ---------------------------------------------------------------------------

let screen = { id: 0, calls: [], started: performance.now() };
function resetScreen() {
  screen = { id: screen.id + 1, calls: [], started: performance.now() };
  const visit = store.visit;
  visit.screens += 1;
  store.visit = visit;
  showMeter();
}

function showMeter() {
  const done = screen.calls.filter((c) => c.status !== null || c.error);
  $("#calls").textContent = screen.calls.length;
  $("#bytes").textContent = done.reduce((a, c) => a + c.bytes, 0).toLocaleString("en");
  const last = Math.max(0, ...done.map((c) => c.end || 0));
  $("#ms").textContent = last ? Math.round(last - screen.started) : 0;
  const visit = store.visit;
  $("#visit-calls").textContent = visit.calls;
  $("#visit-bytes").textContent = visit.bytes.toLocaleString("en");
  $("#visit-screens").textContent = visit.screens;
  renderStory();
}

// The answer came after the page moved to another screen: whoever asked is gone, and drawing it
// would cover the screen now shown (a slow home screen drew over the login form).
class StaleScreen extends Error {}

class ApiError extends Error {
  constructor(call, status, body) {
    const reason = (body && (body.detail || body.error_description)) || "";
    const title = (body && body.title) || statusText(status);
    super(`${call.method} ${call.path} (${call.who}) answered ${status} ${title}${reason ? `: ${reason}` : ""}`);
    this.status = status;
    this.body = body;
  }
}

function statusText(status) {
  return { 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 409: "Conflict",
    422: "Unprocessable Content", 429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout" }[status] || "";
}

async function http(url, { method = "GET", json, form, auth = true } = {}) {
  const headers = {};
  let body;
  if (json !== undefined) { headers["Content-Type"] = "application/json"; body = JSON.stringify(json); }
  if (form !== undefined) { headers["Content-Type"] = "application/x-www-form-urlencoded"; body = new URLSearchParams(form); }
  if (auth && store.token) headers["Authorization"] = `Bearer ${store.token}`;
  const target = new URL(url, location.href);
  const call = { method, path: target.pathname + target.search, origin: target.origin, who: whoServes(url),
    status: null, bytes: 0, start: performance.now(), end: null, requestId: null, error: null, behind: null };
  const mine = screen;
  mine.calls.push(call);
  showMeter();
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), TIMEOUT_MS);
  let response, text;
  try {
    response = await fetch(url, { method, headers, body, signal: controller.signal });
    text = await response.text();
  } catch (e) {
    call.end = performance.now();
    call.error = e.name === "AbortError" ? "no answer in time" : "unreachable";
    showMeter();
    if (mine !== screen) throw new StaleScreen(call.path);
    if (e.name === "AbortError") {
      throw new Error(`${method} ${call.path} (${call.who}) did not answer within ${TIMEOUT_MS / 1000} s; the page stopped waiting. Try again, or see the control room for what is slow.`);
    }
    throw new Error(`${method} ${call.path} (${call.who} at ${call.origin}) could not be reached: is it running? (${e.message})`);
  } finally {
    clearTimeout(timer);
  }
  call.end = performance.now();
  call.status = response.status;
  call.bytes = new TextEncoder().encode(text).length;
  call.requestId = response.headers.get("x-request-id");
  const visit = store.visit;
  visit.calls += 1;
  visit.bytes += call.bytes;
  store.visit = visit;
  showMeter();
  lookBehind(call, mine);
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = { detail: text.slice(0, 200) }; }
  if (data && data._meta && data._meta.completed === false) call.partial = Object.keys(data._meta.errors || {});
  if (response.status === 401 && auth && store.token) { logoutLocally(); }
  if (!response.ok) call.error = `${response.status}`;
  if (mine !== screen) throw new StaleScreen(call.path);
  if (!response.ok) throw new ApiError(call, response.status, data);
  return data;
}

// What an edge did for a call: the demo's control room knows the trace of every request id.
function lookBehind(call, owner) {
  if (!CONFIG.control || !call.requestId) return;
  const ask = async (attempt) => {
    try {
      const response = await fetch(`${CONFIG.control}/api/requests/${encodeURIComponent(call.requestId)}`);
      if (response.ok) {
        const trace = await response.json();
        // the calls the trace shows past the one the page made (clients are where it started)
        const entry = trace.spans.length ? trace.spans[0].node : null;
        const counts = {};
        for (const c of trace.calls) {
          if (c.target !== entry && !CLIENTS.has(c.source)) counts[c.target] = (counts[c.target] || 0) + 1;
        }
        call.traceId = trace.trace_id;
        call.behind = Object.entries(counts).map(([node, n]) => (n > 1 ? `${node} ×${n}` : node));
        if (owner === screen) renderStory();
        if (call.behind.length || attempt >= 2) return;
      }
    } catch (e) { return; }  // no control room: the panel shows what the page saw
    if (attempt < 2) setTimeout(() => ask(attempt + 1), 1500);
  };
  setTimeout(() => ask(1), 900);  // spans arrive in batches
}

// -- the story panel -----------------------------------------------------------------------------

function renderStory() {
  const bff = CONFIG.mode === "bff";
  $("#story-pattern").textContent = bff ? "Pattern: Backend for Frontend (web BFF)" : "Pattern: Direct";
  $("#story-how").textContent = bff
    ? "— one origin; the BFF composes each screen from the services behind it and pushes updates."
    : "— the page calls every service on its own port and composes each screen itself.";
  const here = location.hash || "#/";
  const links = [];
  if (bff && CONFIG.direct_url) links.push(`<a data-testid="other-pattern" href="${esc(CONFIG.direct_url)}/${esc(here)}">this screen, Direct →</a>`);
  if (!bff && CONFIG.bff_url) links.push(`<a data-testid="other-pattern" href="${esc(CONFIG.bff_url)}/${esc(here)}">this screen through the web BFF →</a>`);
  if (CONFIG.control) {
    const last = [...screen.calls].reverse().find((c) => c.requestId);
    const anchor = last ? `#request=${encodeURIComponent(last.requestId)}` : "";
    links.push(`<a data-testid="control-link" target="_blank" href="${esc(CONFIG.control)}/${anchor}">control room ↗</a>`);
  }
  $("#story-links").innerHTML = links.join(" · ");
  const rows = screen.calls.map((c) => `<tr data-testid="screen-call" class="${c.error ? "failed" : ""}">
      <td>${esc(c.method)} ${esc(c.path.length > 48 ? c.path.slice(0, 47) + "…" : c.path)}</td>
      <td><b>${esc(c.who)}</b> <span class="muted">${esc(c.origin.replace(/^https?:\/\//, ""))}</span>
        ${c.behind && c.behind.length ? `<div class="behind" data-testid="behind">behind it: ${esc(c.behind.join(", "))}</div>` : ""}
        ${c.partial && c.partial.length ? `<div class="behind">answered without: ${esc(c.partial.join(", "))}</div>` : ""}</td>
      <td class="num">${c.status !== null ? c.status : esc(c.error || "…")}</td>
      <td class="num">${c.status !== null ? c.bytes.toLocaleString("en") + " B" : ""}</td>
      <td class="num">${c.end ? Math.round(c.end - c.start) + " ms" : ""}</td></tr>`).join("");
  $("#screen-calls").innerHTML = `<tr><th>call</th><th>answered by</th><th class="num">status</th><th class="num">bytes</th><th class="num">time</th></tr>${rows}`;
  const origins = new Set(screen.calls.map((c) => c.origin));
  const bytes = screen.calls.reduce((a, c) => a + c.bytes, 0);
  $("#story-total").textContent = screen.calls.length
    ? `${screen.calls.length} call${screen.calls.length > 1 ? "s" : ""} to ${origins.size} origin${origins.size > 1 ? "s" : ""}, ${bytes.toLocaleString("en")} bytes`
    : "no calls yet";
}

// -- the two ways in -----------------------------------------------------------------------------

function pick(list) { return list[Math.floor(Math.random() * list.length)]; }

const direct = {
  name: "Direct",
  svc(name) { return pick(CONFIG.services[name]); },   // client-side load balancing: the page's job here
  login(username, password) {
    return http(`${CONFIG.security}/oauth/token`, { method: "POST", auth: false, form: {
      grant_type: "password", username, password, client_id: "shop-web",
      scope: "catalog orders notifications profile reviews" } });
  },
  logout(token) { return http(`${CONFIG.security}/oauth/revoke`, { method: "POST", auth: false, form: { token } }); },
  async home() {
    const [categories, products, orders] = await Promise.all([
      http(`${this.svc("catalog")}/categories`, { auth: false }),
      http(`${this.svc("catalog")}/products`, { auth: false }),
      store.token ? http(`${this.svc("orders")}/orders?limit=3`) : Promise.resolve([]),
    ]);
    return { categories, products: products.items, orders };
  },
  async product(sku) {
    const [product, stock, reviews] = await Promise.all([
      http(`${this.svc("catalog")}/products/${sku}`, { auth: false }),
      http(`${this.svc("inventory")}/stock/${sku}`, { auth: false }),
      http(`${this.svc("legacy")}/reviews/${sku}`, { auth: false }),
    ]);
    return { ...product, stock: { available: stock.available }, reviews };
  },
  placeOrder(items) { return http(`${this.svc("orders")}/orders`, { method: "POST", json: { items } }); },
  orders() { return http(`${this.svc("orders")}/orders`); },
  order(id) { return http(`${this.svc("orders")}/orders/${id}`); },
  startEmails(count) { return http(`${this.svc("notifications")}/jobs/emails`, { method: "POST", json: { count } }); },
  job(id) { return http(`${this.svc("notifications")}/jobs/${id}`); },
  emails() { return http(`${this.svc("notifications")}/emails?limit=50`); },
  account() { return http(`${this.svc("profile")}/profile/me`); },
  // No push in the Direct pattern: poll until the thing is finished.
  watch(topic, onData) {
    const [kind, id] = topic.split("/");
    let stopped = false;
    setLive("polling");
    const tick = async () => {
      if (stopped) return;
      try {
        const data = kind === "orders" ? await this.order(id) : await this.job(id);
        onData(data);
        if ((kind === "orders" && FINAL.has(data.status)) || (kind === "jobs" && ["completed", "failed"].includes(data.status))) {
          setLive("off");
          return;
        }
      } catch (e) { /* keep polling */ }
      setTimeout(tick, 700);
    };
    tick();
    return () => { stopped = true; setLive("off"); };
  },
};

const bff = {
  name: "via web BFF",
  login(username, password) {
    return http(`/api/oauth/token`, { method: "POST", auth: false, form: {
      grant_type: "password", username, password, client_id: "shop-web",
      scope: "catalog orders notifications profile reviews" } });
  },
  logout(token) { return http(`/api/oauth/revoke`, { method: "POST", auth: false, form: { token } }); },
  home() { return http(`/api/home`); },
  product(sku) { return http(`/api/products/${sku}`); },
  placeOrder(items) { return http(`/api/orders`, { method: "POST", json: { items } }); },
  orders() { return http(`/api/orders`); },
  order(id) { return http(`/api/orders/${id}`); },
  startEmails(count) { return http(`/api/jobs/emails`, { method: "POST", json: { count } }); },
  job(id) { return http(`/api/jobs/${id}`); },
  emails() { return http(`/api/emails?limit=50`); },
  account() { return http(`/api/account/profile`); },
  watch(topic, onData) { return live.subscribe(topic, onData); },
};

const api = CONFIG.mode === "bff" ? bff : direct;

// One WebSocket to the BFF for the whole visit, opened as soon as someone is signed in (when the
// page starts, at sign-in, on every screen if it was closed), not by the screen that first needs
// it. Opened by the order screen after its GET, it was never opened for an order that had already
// settled by then (a busy machine), and the indicator stayed "live: off".
// After a lost connection: 0.25 s, then backing off to every 8 s, for about a minute (a BFF
// restarting is back in seconds; a token it now refuses would be refused forever).
const RETRY_MS = [250, 500, 1000, 2000, 4000, 8000];
const RETRIES = 12;
const live = {
  socket: null, token: null, handlers: new Map(), retry: null, attempt: 0, failed: false,
  connect(retrying = false) {
    if (CONFIG.mode !== "bff" || !store.token) return;  // the route refuses anonymous callers
    if (this.socket && this.socket.readyState <= 1 && this.token === store.token) return;
    this.close();  // another user's (they signed in since), or one closing
    clearTimeout(this.retry);
    this.retry = null;
    if (!retrying) this.attempt = 0;  // a screen or a sign-in starts the retries afresh
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const url = `${scheme}://${location.host}/api/live?access_token=${encodeURIComponent(store.token)}`;
    const socket = new WebSocket(url);
    this.socket = socket;
    this.token = store.token;
    setLive("connecting");
    socket.onopen = () => {
      this.attempt = 0;
      this.failed = false;
      setLive("connected");
      // what the screen watches, again after a reconnect: the replay brings what was missed
      for (const topic of this.handlers.keys()) this.send({ type: "subscribe", topic, replay: true });
    };
    socket.onerror = () => {
      if (this.handlers.size && !this.failed) {
        this.failed = true;  // once, not at every retry
        showError(new Error("the live connection to the web BFF (/api/live) failed; trying again"));
      }
    };
    socket.onclose = (event) => {
      if (this.socket !== socket) return;  // replaced or stopped on purpose
      this.socket = null;
      setLive("off");
      // 1000 (idle, or closed by us) and 1008 (token expired or revoked, a reader too slow): the
      // server meant it, and the next screen reconnects (a 401 there signs the page out). Any
      // other close is a lost connection (a restart, the network): try again.
      if (event.code === 1000 || event.code === 1008 || this.attempt >= RETRIES) return;
      const delay = RETRY_MS[Math.min(this.attempt, RETRY_MS.length - 1)];
      this.attempt += 1;
      this.retry = setTimeout(() => { this.retry = null; this.connect(true); }, delay);
    };
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "message") {
        const handler = this.handlers.get(message.topic);
        if (handler) handler(message.data);
      } else if (message.type === "error") {
        showError(new Error(`live ${message.topic}: ${message.detail}`));
      }
    };
  },
  close() {
    if (this.socket) {
      const socket = this.socket;
      this.socket = null;  // its close is ours: no reconnect
      socket.close(1000);
    }
  },
  stop() {  // signed out
    this.close();
    clearTimeout(this.retry);
    this.retry = null;
    this.token = null;
    if (CONFIG.mode === "bff") setLive("off");  // Direct: the indicator is the polling's
  },
  send(message) {
    if (this.socket && this.socket.readyState === 1) this.socket.send(JSON.stringify(message));
  },
  subscribe(topic, onData) {
    this.handlers.set(topic, onData);
    this.connect();  // a no-op when open; when it is still opening, its open subscribes
    this.send({ type: "subscribe", topic, replay: true });
    return () => {
      this.handlers.delete(topic);
      this.send({ type: "unsubscribe", topic });
    };
  },
};

function setLive(state) {
  const el = $("#live");
  el.textContent = `live: ${state}`;
  el.classList.toggle("on", state === "connected" || state === "polling");
}

// -- rendering helpers ---------------------------------------------------------------------------

const money = (cents) => `€${(cents / 100).toFixed(2)}`;
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
function render(html) { view.innerHTML = html; }
function showError(error) {
  if (error instanceof StaleScreen) return;
  const p = document.createElement("p");
  p.className = "error";
  p.dataset.testid = "error";
  p.textContent = error.message;
  view.prepend(p);
}
function partialNotice(data, what) {
  const errors = data && data._meta && data._meta.completed === false ? data._meta.errors || {} : null;
  if (!errors) return "";
  const parts = Object.entries(errors).map(([name, e]) => `${name} (${(e && (e.reason || e.status)) || "failed"})`);
  return `<p class="notice" data-testid="partial">Shown without ${esc(parts.join(", "))}: the ${esc(what)} answered with what it had.</p>`;
}
function renderCartCount() { $("#cart-count").textContent = Object.values(store.cart).reduce((a, b) => a + b, 0); }
function renderUser() {
  $("#user").textContent = store.user ? `signed in as ${store.user}` : "";
  $("#logout").hidden = !store.user;
}

// -- screens -------------------------------------------------------------------------------------

let stopWatching = null;

const LABELS = {
  username: "User name", display_name: "Name", email: "E-mail", roles: "Roles", address: "Address",
  member_since: "Customer since", disabled: "Account",
};

const screens = {
  async home() {
    const data = await api.home();
    store.remember(data.products || []);
    const orders = (data.orders || []).map((o) =>
      `<li><a href="#/orders/${o.id}">${esc(o.id)}</a> <span class="status ${o.status}">${o.status}</span> ${money(o.total_cents)}</li>`).join("");
    render(`
      <h2>Coffee gear</h2>
      <p class="muted">${(data.categories || []).map((c) => `${esc(c.name)} (${c.count})`).join(" · ")}</p>
      <div class="grid" data-testid="products">
        ${(data.products || []).map((p) => `
          <div class="card" data-testid="product-${p.sku}">
            <a href="#/product/${p.sku}"><b>${esc(p.name)}</b></a>
            <div class="price">${money(p.price_cents)}</div>
            <button data-add="${p.sku}" data-testid="add-${p.sku}">Add to cart</button>
          </div>`).join("")}
      </div>
      ${store.user ? `<h3>Your recent orders</h3><ul data-testid="recent-orders">${orders || "<li class=muted>none yet</li>"}</ul>` : ""}`);
  },

  async product(sku) {
    const p = await api.product(sku);
    store.remember([p]);
    const reviews = (p.reviews && p.reviews.reviews) || [];
    const stock = p.stock && p.stock.available !== null && p.stock.available !== undefined
      ? `${p.stock.available} in stock` : "stock unknown right now";
    render(`
      ${partialNotice(p, "web BFF")}
      <p><a href="#/">← back</a></p>
      <h2 data-testid="product-name">${esc(p.name)}</h2>
      <p>${esc(p.description || "")}</p>
      <p class="price">${money(p.price_cents)}</p>
      <p data-testid="stock">${stock}</p>
      <button data-add="${p.sku}" data-testid="add-${p.sku}">Add to cart</button>
      <h3>Reviews ${p.reviews && p.reviews.average ? `(${p.reviews.average} / 5)` : ""}</h3>
      <ul>${reviews.map((r) => `<li>${"★".repeat(r.rating)} ${esc(r.text)} <span class="muted">— ${esc(r.author)}</span></li>`).join("") || "<li class=muted>no reviews</li>"}</ul>`);
  },

  async cart() {
    const cart = store.cart;
    const skus = Object.keys(cart);
    if (!skus.length) { render(`<h2>Your cart</h2><p class="muted">Empty.</p>`); return; }
    // A product put in the cart on another visit: ask for its name and price.
    const missing = skus.filter((sku) => !store.products[sku]);
    if (missing.length) store.remember(await Promise.all(missing.map((sku) => api.product(sku))));
    const known = store.products;
    let total = 0;
    const rows = skus.map((sku) => {
      const p = known[sku] || { name: sku, price_cents: 0 };
      const line = p.price_cents * cart[sku];
      total += line;
      return `<tr data-testid="cart-row-${esc(sku)}"><td><a href="#/product/${esc(sku)}">${esc(p.name)}</a> <span class="muted">${esc(sku)}</span></td>
        <td class="num">${money(p.price_cents)}</td><td class="num">${cart[sku]}</td><td class="num">${money(line)}</td></tr>`;
    }).join("");
    render(`
      <h2>Your cart</h2>
      <table data-testid="cart"><tr><th>product</th><th class="num">price</th><th class="num">qty</th><th class="num">subtotal</th></tr>
        ${rows}
        <tr class="total"><td colspan="3">Total</td><td class="num" data-testid="cart-total">${money(total)}</td></tr>
      </table>
      <p><button id="checkout" data-testid="checkout">Check out</button>
         <button class="secondary" id="empty">Empty the cart</button></p>`);
    $("#empty").onclick = () => { store.cart = {}; screens.cart(); };
    $("#checkout").onclick = async () => {
      if (!store.user) { location.hash = "#/login?next=cart"; return; }
      try {
        const order = await api.placeOrder(skus.map((sku) => ({ sku, qty: cart[sku] })));
        store.cart = {};
        location.hash = `#/orders/${order.id}`;
      } catch (e) { showError(e); }
    };
  },

  async orders() {
    if (!store.user) { location.hash = "#/login?next=orders"; return; }
    const orders = await api.orders();
    render(`<h2>Your orders</h2><ul>${orders.map((o) =>
      `<li><a href="#/orders/${o.id}">${esc(o.id)}</a> <span class="status ${o.status}">${o.status}</span> ${money(o.total_cents)}</li>`).join("") || "<li class=muted>none yet</li>"}</ul>`);
  },

  async order(id) {
    const order = await api.order(id);
    const seen = [order.status];
    render(`
      <h2>Order <span data-testid="order-id">${esc(id)}</span></h2>
      <p>Status: <span id="order-status" class="status ${order.status}" data-testid="order-status">${order.status}</span></p>
      <p id="order-reason" class="muted" data-testid="order-reason">${esc(order.reason || "")}</p>
      <ul>${order.items.map((i) => `<li>${i.qty} × ${esc(i.name)} — ${money(i.price_cents)}</li>`).join("")}</ul>
      <p class="price">Total ${money(order.total_cents)}</p>
      <h3>What happened</h3><ol class="timeline" id="timeline" data-testid="timeline"><li>${order.status}</li></ol>
      <p class="muted">The e-mail it sends is under <a href="#/notifications">Notifications</a>.</p>`);
    if (FINAL.has(order.status)) return;
    stopWatching = api.watch(`orders/${id}`, (event) => {
      const status = event.status;
      const el = $("#order-status");
      if (!el || !status) return;
      el.textContent = status;
      el.className = `status ${status}`;
      if (event.reason) $("#order-reason").textContent = event.reason;
      if (seen[seen.length - 1] !== status) {
        seen.push(status);
        $("#timeline").insertAdjacentHTML("beforeend", `<li>${esc(status)}</li>`);
      }
    });
  },

  async emails() {
    if (!store.user) { location.hash = "#/login?next=emails"; return; }
    render(`
      <h2>Send me e-mails</h2>
      <p>Starts a job that sends the e-mails one by one; its progress comes back live.
        What was sent is under <a href="#/notifications">Notifications</a>.</p>
      <p><input id="count" type="number" min="1" max="100" value="10" data-testid="email-count">
         <button id="send" data-testid="send-emails">Send</button></p>
      <div id="job" data-testid="job"></div>`);
    $("#send").onclick = async () => {
      try {
        const job = await api.startEmails(Number($("#count").value));
        $("#job").innerHTML = `<p>Job ${esc(job.id)}: <span id="job-state" data-testid="job-state">${job.status}</span>
          <span id="job-done" data-testid="job-done">${job.done}</span> / ${job.total}</p>
          <progress id="job-bar" max="${job.total}" value="${job.done}"></progress>`;
        if (stopWatching) stopWatching();
        stopWatching = api.watch(`jobs/${job.id}`, (event) => {
          $("#job-state").textContent = event.status;
          $("#job-done").textContent = event.done;
          $("#job-bar").value = event.done;
        });
      } catch (e) { showError(e); }
    };
  },

  async notifications() {
    if (!store.user) { location.hash = "#/login?next=notifications"; return; }
    const emails = await api.emails();
    const kinds = { order: "order", bulk: "requested" };
    render(`
      <h2>Notifications</h2>
      <p class="muted">The e-mails the shop sent you: order confirmations come from the notifications service,
        which hears of each order through the event bus; requested ones from an e-mail job.</p>
      <table data-testid="emails"><tr><th>sent</th><th>subject</th><th>to</th><th>kind</th></tr>
        ${emails.map((m) => `<tr data-testid="email-row"><td>${new Date(m.created_at * 1000).toLocaleString()}</td>
          <td>${esc(m.subject)}</td><td>${esc(m.to)}</td>
          <td>${esc(kinds[m.kind] || m.kind)}${m.kind === "order" && m.ref ? ` · <a href="#/orders/${esc(m.ref)}">${esc(m.ref)}</a>` : ""}</td></tr>`).join("")
          || `<tr><td colspan="4" class="muted">nothing sent yet: check out, or send some e-mails</td></tr>`}
      </table>
      <p><button class="secondary" id="refresh" data-testid="refresh-emails">Refresh</button></p>`);
    $("#refresh").onclick = () => route();
  },

  async account() {
    if (!store.user) { location.hash = "#/login?next=account"; return; }
    const me = await api.account();
    const value = (key, v) => {
      if (key === "disabled") return v ? "disabled" : "active";
      if (Array.isArray(v)) return v.join(", ");
      return v ?? "—";
    };
    const rows = Object.entries(me).filter(([k]) => k !== "preferences" && k !== "served_by").map(([k, v]) =>
      `<tr><th>${esc(LABELS[k] || k.replace(/_/g, " "))}</th><td>${esc(value(k, v))}</td></tr>`);
    if (me.preferences) {
      rows.push(`<tr><th>Newsletter</th><td>${me.preferences.newsletter ? "yes" : "no"}</td></tr>`);
      rows.push(`<tr><th>Language</th><td>${esc(me.preferences.language)}</td></tr>`);
    }
    render(`
      <h2>Your account</h2>
      <table data-testid="account">${rows.join("")}</table>
      <p class="muted">served by <b data-testid="served-by">${esc(me.served_by || "?")}</b></p>
      <p class="explain" data-testid="strangler-note">${strangler(me.served_by)}</p>`);
  },

  login(params) {
    render(`
      <h2>Sign in</h2>
      <form class="login" id="login" data-testid="login-form">
        <input name="username" placeholder="user (alice)" autocomplete="username" data-testid="username" required>
        <input name="password" type="password" placeholder="password (alice-pass)" autocomplete="current-password" data-testid="password" required>
        <button type="submit" data-testid="sign-in">Sign in</button>
      </form>`);
    $("#login").onsubmit = async (event) => {
      event.preventDefault();
      const form = new FormData(event.target);
      try {
        const token = await api.login(form.get("username"), form.get("password"));
        store.token = token.access_token;
        store.user = form.get("username");
        renderUser();
        live.connect();
        location.hash = `#/${params.get("next") || ""}`;
      } catch (e) { showError(e); }
    };
  },
};

function strangler(servedBy) {
  const flag = "<code>strangler.account-profile</code>";
  const where = CONFIG.control ? `in the <a href="${esc(CONFIG.control)}/" target="_blank">control room</a> or with <code>edgeway demo flag</code>` : "with <code>edgeway demo flag</code>";
  if (CONFIG.mode !== "bff") {
    return "Direct: the page asks the profile service for this itself (<code>/profile/me</code>). The old shop's account page, in the legacy monolith, is reached only through the edges.";
  }
  if (servedBy === "legacy") {
    return `This page came from the <b>legacy monolith</b>: the web BFF still routes <code>/api/account/profile</code> there. `
      + `That is the strangler pattern — the edge moves routes off the monolith one at a time, without the page changing. `
      + `Switch ${flag} on (${where}) and the edge moves the same call to the new profile service in steps — 10 %, 50 %, 100 % — and back by itself if the new service does worse.`;
  }
  return `This page came from the new <b>profile service</b>: ${flag} is on, so the web BFF is moving the route there from the legacy monolith, step by step. The page did not change.`;
}

function logoutLocally() { store.token = null; store.user = null; live.stop(); renderUser(); }

$("#logout").onclick = async () => {
  const token = store.token;
  logoutLocally();
  if (token) { try { await api.logout(token); } catch (e) { /* already gone */ } }
  location.hash = "#/";
};

view.addEventListener("click", (event) => {
  const sku = event.target.dataset && event.target.dataset.add;
  if (!sku) return;
  const cart = store.cart;
  cart[sku] = (cart[sku] || 0) + 1;
  store.cart = cart;
  event.target.textContent = "Added ✓";
});

async function route() {
  if (stopWatching) { stopWatching(); stopWatching = null; }
  live.connect();  // at the start of a visit, and again if the server closed it (idle, expired)
  resetScreen();
  const [path, query] = location.hash.replace(/^#\/?/, "").split("?");
  const params = new URLSearchParams(query || "");
  const [name, arg] = path.split("/");
  render(`<p class="muted">Loading…</p>`);
  try {
    if (!name) await screens.home();
    else if (name === "product") await screens.product(arg);
    else if (name === "orders" && arg) await screens.order(arg);
    else if (screens[name]) await screens[name](params);
    else render(`<p>Nothing here. <a href="#/">Back to the shop</a></p>`);
  } catch (e) {
    if (e instanceof StaleScreen) return;  // the screen shown now is another route's
    if (e.status === 401) { location.hash = `#/login?next=${encodeURIComponent(path)}`; return; }
    render(`<p class="muted">This screen could not be shown. <a href="#/${esc(path)}" onclick="location.reload()">Try again</a></p>`);
    showError(e);
  }
}

$("#mode").textContent = api.name;
renderUser();
renderCartCount();
window.addEventListener("hashchange", route);
route();

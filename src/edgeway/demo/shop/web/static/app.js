// The edgeway shop: one page, two ways to reach the system.
//
//   Direct  (served by the web server): the page calls each service on its own port (they answer
//           CORS for this origin), logs in at the security service, composes each screen from
//           several calls, and polls for order and e-mail job progress.
//   BFF     (served through the web BFF): one origin, endpoints shaped for this page (/api/home,
//           /api/products/{sku} are aggregated at the edge), and live updates pushed over the BFF's
//           WebSocket (topics orders/{id} and jobs/{id}).
//
// The footer counts the calls and bytes of the current screen, to compare the two.

const CONFIG = window.SHOP_CONFIG || { mode: "direct", services: {} };
const FINAL = new Set(["confirmed", "cancelled", "failed"]);
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
};

// -- HTTP with a meter ---------------------------------------------------------------------------

const meter = { calls: 0, bytes: 0 };
function resetMeter() { meter.calls = 0; meter.bytes = 0; showMeter(); }
function showMeter() { $("#calls").textContent = meter.calls; $("#bytes").textContent = meter.bytes; }

class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.detail || body.error_description || body.title)) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function http(url, { method = "GET", json, form, auth = true } = {}) {
  const headers = {};
  let body;
  if (json !== undefined) { headers["Content-Type"] = "application/json"; body = JSON.stringify(json); }
  if (form !== undefined) { headers["Content-Type"] = "application/x-www-form-urlencoded"; body = new URLSearchParams(form); }
  if (auth && store.token) headers["Authorization"] = `Bearer ${store.token}`;
  const response = await fetch(url, { method, headers, body });
  const text = await response.text();
  meter.calls += 1;
  meter.bytes += new TextEncoder().encode(text).length;
  showMeter();
  const data = text ? JSON.parse(text) : null;
  if (response.status === 401 && auth && store.token) { logoutLocally(); }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
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
  account() { return http(`/api/account/profile`); },
  watch(topic, onData) { return live.subscribe(topic, onData); },
};

const api = CONFIG.mode === "bff" ? bff : direct;

// One WebSocket to the BFF for every live topic of this page.
const live = {
  socket: null, handlers: new Map(), opening: null,
  connect() {
    if (this.socket && this.socket.readyState <= 1) return this.opening;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const url = `${scheme}://${location.host}/api/live?access_token=${encodeURIComponent(store.token || "")}`;
    const socket = new WebSocket(url);
    this.socket = socket;
    this.opening = new Promise((resolve, reject) => {
      socket.onopen = () => { setLive("connected"); resolve(); };
      socket.onerror = () => reject(new Error("the live connection failed"));
    });
    socket.onclose = () => { setLive("off"); this.socket = null; };
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "message") {
        const handler = this.handlers.get(message.topic);
        if (handler) handler(message.data);
      } else if (message.type === "error") {
        showError(new Error(`live ${message.topic}: ${message.detail}`));
      }
    };
    return this.opening;
  },
  subscribe(topic, onData) {
    this.handlers.set(topic, onData);
    this.connect().then(() => this.socket.send(JSON.stringify({ type: "subscribe", topic, replay: true })));
    return () => {
      this.handlers.delete(topic);
      if (this.socket && this.socket.readyState === 1) this.socket.send(JSON.stringify({ type: "unsubscribe", topic }));
    };
  },
};

function setLive(state) {
  const el = $("#live");
  el.textContent = `live: ${state}`;
  el.classList.toggle("on", state !== "off");
}

// -- rendering helpers ---------------------------------------------------------------------------

const money = (cents) => `€${(cents / 100).toFixed(2)}`;
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
function render(html) { view.innerHTML = html; }
function showError(error) {
  const p = document.createElement("p");
  p.className = "error";
  p.dataset.testid = "error";
  p.textContent = error.message;
  view.prepend(p);
}
function renderCartCount() { $("#cart-count").textContent = Object.values(store.cart).reduce((a, b) => a + b, 0); }
function renderUser() {
  $("#user").textContent = store.user ? `signed in as ${store.user}` : "";
  $("#logout").hidden = !store.user;
}

// -- screens -------------------------------------------------------------------------------------

let stopWatching = null;

const screens = {
  async home() {
    const data = await api.home();
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
    const reviews = (p.reviews && p.reviews.reviews) || [];
    render(`
      <p><a href="#/">← back</a></p>
      <h2 data-testid="product-name">${esc(p.name)}</h2>
      <p>${esc(p.description || "")}</p>
      <p class="price">${money(p.price_cents)}</p>
      <p data-testid="stock">${p.stock ? `${p.stock.available} in stock` : ""}</p>
      <button data-add="${p.sku}" data-testid="add-${p.sku}">Add to cart</button>
      <h3>Reviews ${p.reviews && p.reviews.average ? `(${p.reviews.average} / 5)` : ""}</h3>
      <ul>${reviews.map((r) => `<li>${"★".repeat(r.rating)} ${esc(r.text)} <span class="muted">— ${esc(r.author)}</span></li>`).join("") || "<li class=muted>no reviews</li>"}</ul>`);
  },

  async cart() {
    const cart = store.cart;
    const skus = Object.keys(cart);
    if (!skus.length) { render(`<h2>Your cart</h2><p class="muted">Empty.</p>`); return; }
    render(`
      <h2>Your cart</h2>
      <table data-testid="cart"><tr><th>product</th><th>qty</th></tr>
        ${skus.map((sku) => `<tr><td>${esc(sku)}</td><td>${cart[sku]}</td></tr>`).join("")}
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
      <h3>What happened</h3><ol class="timeline" id="timeline" data-testid="timeline"><li>${order.status}</li></ol>`);
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
      <p>Starts a job that sends the e-mails one by one; its progress comes back live.</p>
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

  async account() {
    if (!store.user) { location.hash = "#/login?next=account"; return; }
    const me = await api.account();
    render(`
      <h2>Your account</h2>
      <table data-testid="account">${Object.entries(me).filter(([k]) => k !== "preferences").map(([k, v]) =>
        `<tr><th>${esc(k)}</th><td>${esc(Array.isArray(v) ? v.join(", ") : v)}</td></tr>`).join("")}</table>
      <p class="muted">served by <b data-testid="served-by">${esc(me.served_by || "?")}</b></p>`);
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
        location.hash = `#/${params.get("next") || ""}`;
      } catch (e) { showError(e); }
    };
  },
};

function logoutLocally() { store.token = null; store.user = null; renderUser(); }

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
  resetMeter();
  const [path, query] = location.hash.replace(/^#\/?/, "").split("?");
  const params = new URLSearchParams(query || "");
  const [name, arg] = path.split("/");
  try {
    if (!name) await screens.home();
    else if (name === "product") await screens.product(arg);
    else if (name === "orders" && arg) await screens.order(arg);
    else if (screens[name]) await screens[name](params);
    else render(`<p>Nothing here. <a href="#/">Back to the shop</a></p>`);
  } catch (e) {
    if (e.status === 401) { location.hash = `#/login?next=${encodeURIComponent(path)}`; return; }
    render("");
    showError(e);
  }
}

$("#mode").textContent = api.name;
renderUser();
renderCartCount();
window.addEventListener("hashchange", route);
route();

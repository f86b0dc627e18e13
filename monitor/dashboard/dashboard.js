// The dashboard page: polls /dashboard/data and redraws; retries through POST /orders/{id}/retry.
// Plain DOM with textContent only (never innerHTML), so nothing in the data can become markup.
"use strict";

const params = new URLSearchParams(location.search);
const REFRESH_SECONDS = Math.max(1, Number(params.get("refresh")) || 5);
const TOKEN_KEY = "book-monitor-admin-token";
let adminEnabled = false;

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-") || key.startsWith("aria-") || key === "role") node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

function tile(label, value, cls) {
  return el("div", { class: cls || "" }, el("dt", { textContent: label }), el("dd", { textContent: String(value) }));
}

function usd(value) { return "$" + Number(value || 0).toFixed(2); }

function age(iso, now) {
  if (!iso) return "—";
  const seconds = Math.max(0, (now - new Date(iso)) / 1000);
  if (seconds < 90) return Math.round(seconds) + " s";
  if (seconds < 5400) return Math.round(seconds / 60) + " min";
  return (seconds / 3600).toFixed(1) + " h";
}

function time(iso) { return iso ? new Date(iso).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "—"; }

function say(message, kind) {
  const box = document.getElementById("alert");
  box.textContent = message;
  box.className = kind || "";
  box.hidden = !message;
}

function renderDaemon(d) {
  adminEnabled = d.adminEnabled;
  const state = d.claiming ? "claiming" : "not claiming";
  const problems = d.problems.length ? " — " + d.problems.join("; ") : "";
  const line = document.getElementById("daemon");
  line.textContent = `worker ${d.workerId} · v${d.version} · ${state} · ${d.inFlightHere} in flight here${problems}`;
  // Green only when the daemon is doing its job: healthy and claiming (stopped on purpose is amber).
  line.className = d.problems.length ? "state-bad" : d.claiming ? "state-ok" : "state-paused";
  document.getElementById("token-form").hidden = !adminEnabled;
}

function renderQueue(q, now) {
  const by = q.by_status || {};
  const failed24 = Object.values(q.failed_last_24h || {}).reduce((a, b) => a + b, 0);
  document.getElementById("queue").replaceChildren(
    tile("waiting (due now)", q.waiting),
    tile("drawing", q.in_flight),
    tile("retry scheduled", q.retry_scheduled),
    tile("expired leases", q.expired_leases, q.expired_leases ? "state-bad" : ""),
    tile("unpaid pending", q.pending_unpaid),
    tile("oldest paid pending", age(q.oldest_waiting_since, now)),
    tile("completed", by.completed || 0),
    tile("failed (all)", by.failed || 0),
    tile("failed 24 h", failed24, failed24 ? "state-bad" : ""),
  );
}

function renderSpend(s, daemon) {
  const here = Object.values(daemon.spendSinceStartUsd || {}).reduce((a, b) => a + b, 0);
  document.getElementById("spend").replaceChildren(
    tile("today (items changed since 00:00 UTC)", usd(s.cost_usd)),
    tile("unpriced calls today", s.unpriced_calls),
    tile("this process since start", usd(here)),
  );
}

function renderInFlight(items) {
  const rows = items.map((item) => {
    const pct = Math.max(0, Math.min(100, item.progress || 0));
    const fill = el("span");
    fill.style.width = pct + "%";  // CSSOM, which the page's Content-Security-Policy allows
    const bar = el("span", { class: "bar", role: "progressbar", "aria-valuemin": "0",
                             "aria-valuemax": "100", "aria-valuenow": String(pct) }, fill);
    const pages = item.pages_total ? `${item.pages_done} / ${item.pages_total}` : "—";
    return el("tr", { "data-item": item.id },
      el("td", { class: "id", textContent: item.id }),
      el("td", {}, bar, el("span", { class: "pct", textContent: pct + "%" })),
      el("td", { class: "step", textContent: item.current_step || item.current_step_code || "—" }),
      el("td", { textContent: pages }),
      el("td", { textContent: `${item.attempts} / ${item.max_attempts}` }),
      el("td", { class: item.lease_expired ? "state-bad" : "",
                 textContent: item.claimed_by + (item.lease_expired ? " (lease expired)" : "") }));
  });
  document.querySelector("#in-flight tbody").replaceChildren(...rows);
  document.getElementById("in-flight").hidden = rows.length === 0;
  document.getElementById("in-flight-empty").hidden = rows.length !== 0;
}

function renderFailures(items) {
  const rows = items.map((item) => {
    const button = el("button", { type: "button", class: "retry", textContent: "Retry",
                                  "data-item": item.id });
    if (!adminEnabled) { button.disabled = true; button.title = "admin actions are disabled: set ADMIN_TOKEN"; }
    else if (!token()) { button.disabled = true; button.title = "enter the admin token above"; }
    else if (item.payment_status !== "paid") { button.disabled = true; button.title = "the order is no longer paid"; }
    button.addEventListener("click", () => retry(item.id, button));
    return el("tr", { "data-item": item.id },
      el("td", { class: "id", textContent: item.id }),
      el("td", { class: "code", textContent: item.error_code || "unknown" }),
      el("td", { textContent: item.error_message || "" }),
      el("td", { textContent: `${item.attempts} / ${item.max_attempts}` }),
      el("td", { textContent: time(item.updated_at) }),
      el("td", {}, button));
  });
  document.querySelector("#failures tbody").replaceChildren(...rows);
  document.getElementById("failures").hidden = rows.length === 0;
  document.getElementById("failures-empty").hidden = rows.length !== 0;
}

async function retry(id, button) {
  button.disabled = true;
  let answer;
  try {
    const response = await fetch(`/orders/${encodeURIComponent(id)}/retry`, {
      method: "POST", headers: { Authorization: `Bearer ${token()}` } });
    answer = { status: response.status, body: await response.json().catch(() => ({})) };
  } catch (error) {
    say(`retry not sent: ${error}`);
    button.disabled = false;
    return;
  }
  if (answer.status === 200) say(`item ${id} sent back to the queue`, "info");
  else if (answer.status === 401) say("the admin token was refused");
  else say(`retry refused (${answer.status}): ${answer.body.message || answer.body.error || ""}`);
  await refresh();
}

async function refresh() {
  let response, body;
  try {
    response = await fetch("/dashboard/data", { cache: "no-store" });
    body = await response.json();
  } catch (error) {
    document.getElementById("daemon").textContent = `the daemon does not answer (${error})`;
    document.getElementById("daemon").className = "state-bad";
    return;
  }
  renderDaemon(body.daemon);
  if (body.database === null) {
    document.getElementById("daemon").textContent += " — the database did not answer; figures are stale";
  } else {
    const now = new Date(body.generatedAt);
    renderQueue(body.database.queue, now);
    renderSpend(body.database.spend_today, body.daemon);
    renderInFlight(body.database.in_flight);
    renderFailures(body.database.failures);
  }
  document.getElementById("updated").textContent = time(body.generatedAt);
}

function setUpToken() {
  const input = document.getElementById("token");
  const forget = document.getElementById("token-forget");
  forget.hidden = !token();
  document.getElementById("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (input.value) sessionStorage.setItem(TOKEN_KEY, input.value);
    input.value = "";
    forget.hidden = !token();
    refresh();
  });
  forget.addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); forget.hidden = true; refresh(); });
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("refresh").textContent = String(REFRESH_SECONDS);
  setUpToken();
  refresh();
  setInterval(refresh, REFRESH_SECONDS * 1000);
});

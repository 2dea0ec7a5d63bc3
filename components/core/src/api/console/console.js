// The operations console: plain DOM over /api/v1. Every piece of data reaches the page
// through textContent or attributes set by createElement, never as markup.
"use strict";

const KEY_STORAGE = "adcp-console-api-key";
const REFRESH_MS = 5000;
const PAGE_SIZE = 25;
const STATUSES = [
  "pending_dispatch", "awaiting_decision", "submitted", "working", "input-required",
  "auth-required", "unknown", "completed", "failed", "rejected", "canceled", "timed_out",
  "canceled_locally",
];
const CLOSED = ["completed", "failed", "rejected", "canceled", "timed_out", "canceled_locally"];
const TASKS = [
  "create_media_buy", "update_media_buy", "sync_creatives", "accept_proposal", "build_creative",
  "buy_products", "control_media_buy", "decline_proposals", "get_creative_features", "get_products",
  "refine_proposals", "request_proposals", "sync_catalogs",
];

class ApiError extends Error {
  constructor(status, code, message) {
    super(code + ": " + message);
    this.status = status;
    this.code = code;
  }
}

function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE);
}

// Every page of an operation's history, in journal order.
async function allEvents(path) {
  const out = [];
  let cursor = null;
  do {
    const page = await api("GET", path + "?limit=200" + (cursor ? "&cursor=" + cursor : ""));
    out.push(...page.events);
    cursor = page.next_cursor;
  } while (cursor);
  return out;
}

async function api(method, path, body) {
  const headers = { Authorization: "Bearer " + (apiKey() || "") };
  const init = { method, headers, cache: "no-store", credentials: "omit" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  const text = await resp.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch (_) {
    json = null;
  }
  if (!resp.ok) {
    const code = (json && json.code) || "http_" + resp.status;
    const message = (json && json.message) || resp.statusText || "request failed";
    throw new ApiError(resp.status, code, message);
  }
  return json;
}

// --- DOM helpers -------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") node.textContent = String(v);
    else if (k === "onclick") node.addEventListener("click", v);
    else if (k === "onsubmit") node.addEventListener("submit", v);
    else if (k === "onchange") node.addEventListener("change", v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

function time(ms) {
  if (!ms) return "—";
  return new Date(ms).toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

function duration(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 90) return s + " s";
  const m = Math.round(s / 60);
  if (m < 90) return m + " min";
  const h = Math.round(m / 60);
  if (h < 48) return h + " h";
  return Math.round(h / 24) + " d";
}

function relative(ms) {
  if (!ms) return "—";
  const d = ms - Date.now();
  return d >= 0 ? "in " + duration(d) : duration(-d) + " ago";
}

function json(v) {
  return el("pre", { class: "json", text: JSON.stringify(v, null, 2) });
}

function badge(status) {
  return el("span", { class: "badge status-" + String(status).replace(/[^a-z_-]/g, ""), text: status });
}

function showStatus(text, isError) {
  const s = document.getElementById("status");
  s.textContent = text;
  s.className = isError ? "error" : "";
}

// --- routing -----------------------------------------------------------------------------

let current = null;

function route() {
  const hash = location.hash.replace(/^#/, "") || "/operations";
  const [path, query] = hash.split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "operations" && parts[1]) return new OperationView(parts[1]);
  if (parts[0] === "sellers") return new SellersView();
  if (parts[0] === "health") return new HealthView();
  return new OperationsView(params);
}

function navigate() {
  if (!apiKey()) {
    showSignIn("");
    return;
  }
  document.getElementById("sign-in").hidden = true;
  document.getElementById("nav").hidden = false;
  const view = clear(document.getElementById("view"));
  view.hidden = false;
  current = route();
  current.render(view);
  refresh(true);
}

let refreshing = null;

// One refresh at a time: a slow answer is not overtaken by the next tick. A `fresh` refresh
// (after an action or a navigation) waits for one in flight and then reads again.
async function refresh(fresh) {
  while (fresh && refreshing) await refreshing;
  if (!current) return;
  if (refreshing) return refreshing;
  refreshing = refreshView(current).finally(() => {
    refreshing = null;
  });
  return refreshing;
}

async function refreshView(view) {
  try {
    await view.refresh();
    if (view === current) showStatus("Updated " + new Date().toLocaleTimeString());
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      signOut(e.message);
    } else if (view === current) {
      showStatus(e.message, true);
    }
  }
}

function showSignIn(error) {
  current = null;
  document.getElementById("nav").hidden = true;
  document.getElementById("view").hidden = true;
  document.getElementById("sign-in").hidden = false;
  document.getElementById("sign-in-error").textContent = error;
  showStatus("");
}

function signOut(error) {
  sessionStorage.removeItem(KEY_STORAGE);
  showSignIn(error || "");
}

async function signIn(event) {
  event.preventDefault();
  const input = document.getElementById("api-key");
  const key = input.value.trim();
  const error = document.getElementById("sign-in-error");
  error.textContent = "";
  sessionStorage.setItem(KEY_STORAGE, key);
  try {
    await api("GET", "/api/v1/summary");
  } catch (e) {
    sessionStorage.removeItem(KEY_STORAGE);
    error.textContent = e.message;
    return;
  }
  input.value = "";
  navigate();
}

// --- operations list ---------------------------------------------------------------------

class OperationsView {
  constructor(params) {
    this.filter = {
      status: params.get("status") || "",
      task: params.get("task") || "",
      seller_id: params.get("seller_id") || "",
    };
    this.cursor = params.get("cursor") || "";
  }

  hash(cursor) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(this.filter)) if (v) q.set(k, v);
    if (cursor) q.set("cursor", cursor);
    const s = q.toString();
    return "#/operations" + (s ? "?" + s : "");
  }

  render(root) {
    root.append(el("h2", { text: "Operations" }));
    this.counts = el("p", { id: "status-counts", class: "counts" });
    root.append(this.counts);
    const select = (name, values, label) => {
      const s = el("select", { id: "filter-" + name, name, "aria-label": label });
      s.append(el("option", { value: "", text: "any " + label }));
      for (const v of values) s.append(el("option", { value: v, text: v, selected: v === this.filter[name] }));
      return s;
    };
    const seller = el("input", {
      id: "filter-seller_id", name: "seller_id", placeholder: "seller id", value: this.filter.seller_id,
      "aria-label": "seller",
    });
    const form = el("form", { id: "filters", class: "filters", onsubmit: (e) => {
      e.preventDefault();
      this.filter = {
        status: form.querySelector("#filter-status").value,
        task: form.querySelector("#filter-task").value,
        seller_id: seller.value.trim(),
      };
      location.hash = this.hash("");
    } },
      select("status", STATUSES, "status"), select("task", TASKS, "task"), seller,
      el("button", { type: "submit", text: "Filter" }));
    root.append(form);
    this.table = el("tbody", { id: "operations-rows" });
    root.append(el("table", { id: "operations" },
      el("thead", {}, el("tr", {}, ...["Operation", "Status", "Task", "Seller", "Age", "Next action"].map(
        (h) => el("th", { text: h })))),
      this.table));
    this.pager = el("p", { class: "pager" });
    root.append(this.pager);
  }

  async refresh() {
    const q = new URLSearchParams({ limit: String(PAGE_SIZE) });
    for (const [k, v] of Object.entries(this.filter)) if (v) q.set(k, v);
    if (this.cursor) q.set("cursor", this.cursor);
    const [summary, page] = await Promise.all([
      api("GET", "/api/v1/summary"),
      api("GET", "/api/v1/operations?" + q.toString()),
    ]);
    const counts = summary.operations_by_status.map((c) => c.count + " " + c.status);
    this.counts.textContent = counts.length ? counts.join(" · ") : "no operations yet";
    clear(this.table);
    for (const op of page.operations) {
      const next = op.status === "awaiting_decision" ? null : (op.next_poll_at_ms || op.deadline_at_ms);
      this.table.append(el("tr", { "data-operation-id": op.operation_id },
        el("td", {}, el("a", { href: "#/operations/" + encodeURIComponent(op.operation_id), text: op.operation_id })),
        el("td", {}, badge(op.status)),
        el("td", { text: op.task }),
        el("td", { text: op.seller_id }),
        el("td", { text: duration(Date.now() - op.created_at_ms) }),
        el("td", { text: CLOSED.includes(op.status) ? "—" : op.status === "awaiting_decision" ? "needs a decision" : next && next <= Date.now() ? "due now" : relative(next) })));
    }
    if (!page.operations.length) {
      this.table.append(el("tr", {}, el("td", { colspan: "6", text: "No operations match." })));
    }
    clear(this.pager);
    if (this.cursor) this.pager.append(el("a", { href: this.hash(""), text: "← Newest" }), " ");
    if (page.next_cursor) this.pager.append(el("a", { id: "older", href: this.hash(page.next_cursor), text: "Older →" }));
  }
}

// --- one operation -----------------------------------------------------------------------

class OperationView {
  constructor(id) {
    this.id = id;
    this.pending = null;
  }

  render(root) {
    root.append(el("p", {}, el("a", { href: "#/operations", text: "← All operations" })));
    root.append(el("h2", {}, "Operation ", el("code", { id: "operation-id", text: this.id })));
    this.summary = el("dl", { id: "operation-summary", class: "facts" });
    this.actions = el("div", { id: "actions", class: "actions" });
    this.result = el("p", { id: "action-result", role: "status" });
    this.args = el("div", { id: "arguments" });
    this.outcome = el("div", { id: "outcome" });
    this.timeline = el("tbody", { id: "timeline-rows" });
    root.append(this.summary, this.actions, this.result,
      el("h3", { text: "Timeline" }),
      el("table", { id: "timeline" },
        el("thead", {}, el("tr", {}, ...["Time", "Event", "Source", "Status", "Effect", "By", "Detail"].map(
          (h) => el("th", { text: h })))),
        this.timeline),
      el("h3", { text: "Outcome" }), this.outcome,
      el("h3", { text: "Arguments" }), this.args);
  }

  async refresh() {
    const path = "/api/v1/operations/" + encodeURIComponent(this.id);
    const [op, events] = await Promise.all([api("GET", path), allEvents(path + "/events")]);
    this.op = op;
    const facts = [
      ["Status", badge(op.status)],
      ["Task", op.task],
      ["Seller", op.seller_id],
      ["Seller's message", op.message || "—"],
      ["Seller task id", op.task_id || "—"],
      ["Media buy id", (op.result && op.result.media_buy_id) || "—"],
      ["Created", time(op.created_at_ms)],
      ["Updated", time(op.updated_at_ms)],
      ["Next poll", CLOSED.includes(op.status) ? "—" : time(op.next_poll_at_ms)],
      ["Deadline", time(op.deadline_at_ms)],
    ];
    if (op.governance) {
      facts.push(["Governance", (op.governance.approved ? "approved" : "not approved") +
        (op.governance.explanation ? ": " + op.governance.explanation : "")]);
    }
    if (op.linked_from) facts.push(["Linked from", op.linked_from.operation_id || JSON.stringify(op.linked_from)]);
    clear(this.summary);
    for (const [k, v] of facts) this.summary.append(el("dt", { text: k }), el("dd", {}, v));
    clear(this.timeline);
    for (const e of events) {
      const detail = e.change ? e.change : e.error ? e.error : e.retry_at_ms ? { retry_at_ms: e.retry_at_ms } : null;
      this.timeline.append(el("tr", {},
        el("td", { text: time(e.recorded_at_ms) }),
        el("td", { text: e.kind }),
        el("td", { text: e.source || (e.kind === "local" ? "orchestrator" : "—") }),
        el("td", { text: e.status || "" }),
        el("td", { text: e.effect ? e.effect.effect + (e.effect.status ? " → " + e.effect.status : "") : "" }),
        el("td", { text: e.by || "" }),
        el("td", { text: detail ? JSON.stringify(detail) : "" })));
    }
    clear(this.outcome);
    if (op.error) this.outcome.append(el("p", { class: "error", text: "Error" }), json(op.error));
    if (op.result) this.outcome.append(json(op.result));
    if (!op.error && !op.result) this.outcome.append(el("p", { text: "No outcome yet." }));
    clear(this.args).append(json(op.arguments));
    if (!this.pending) this.renderActions();
  }

  allowed() {
    const s = this.op.status;
    const out = [];
    if (s === "awaiting_decision") out.push("approve");
    if (s === "awaiting_decision" || s === "input-required") out.push("reject", "replan");
    const hasBuy = this.op.result && this.op.result.media_buy_id;
    if (!CLOSED.includes(s) || (["completed"].includes(s) && hasBuy && !this.op.cancel)) out.push("cancel");
    return out;
  }

  renderActions() {
    clear(this.actions);
    const labels = { approve: "Approve", reject: "Reject", replan: "Re-plan", cancel: "Cancel operation" };
    for (const a of this.allowed()) {
      this.actions.append(el("button", { type: "button", id: "action-" + a, onclick: () => this.confirm(a), text: labels[a] }));
    }
  }

  confirm(action) {
    this.pending = action;
    clear(this.actions);
    const questions = {
      approve: "Approve this operation? It is sent to the seller now.",
      reject: "Reject this operation? It is canceled and never sent.",
      replan: "Re-plan with these changed arguments (JSON object)? A new operation replaces this one.",
      cancel: "Cancel this operation?",
    };
    const reason = el("input", { id: "decision-reason", placeholder: "reason (optional)", "aria-label": "reason" });
    const args = action === "replan" ? el("textarea", { id: "replan-arguments", rows: "4", "aria-label": "changed arguments" }) : null;
    if (args) args.value = "{}";
    this.actions.append(el("p", { class: "question", text: questions[action] }), args,
      action === "approve" ? null : reason,
      el("button", { type: "button", id: "confirm-action", onclick: () => this.act(action, reason.value.trim(), args && args.value) , text: "Confirm" }),
      el("button", { type: "button", id: "cancel-action", onclick: () => { this.pending = null; this.renderActions(); }, text: "Back" }));
  }

  async act(action, reason, argsText) {
    const path = "/api/v1/operations/" + encodeURIComponent(this.id);
    const body = {};
    if (reason) body.reason = reason;
    try {
      let answer;
      if (action === "cancel") {
        answer = await api("POST", path + "/cancel", body);
      } else {
        body.action = action;
        if (action === "replan") {
          try {
            body.arguments = JSON.parse(argsText || "{}");
          } catch (e) {
            this.result.className = "error";
            this.result.textContent = "The changed arguments are not JSON: " + e.message;
            return;
          }
        }
        answer = await api("POST", path + "/decision", body);
      }
      const op = answer.operation;
      this.result.className = "ok";
      this.result.textContent = action + ": done; " + (action === "replan"
        ? "new operation " + op.operation_id + " is " + op.status
        : "the operation is now " + op.status);
      if (action === "replan") {
        this.result.append(" ", el("a", { href: "#/operations/" + encodeURIComponent(op.operation_id), text: "open it" }));
      }
    } catch (e) {
      this.result.className = "error";
      this.result.textContent = action + " refused: " + e.message;
    }
    this.pending = null;
    await refresh(true);
  }
}

// --- sellers -----------------------------------------------------------------------------

class SellersView {
  render(root) {
    root.append(el("h2", { text: "Sellers" }));
    this.result = el("p", { id: "seller-result", role: "status" });
    this.table = el("tbody", { id: "sellers-rows" });
    root.append(this.result, el("table", { id: "sellers" },
      el("thead", {}, el("tr", {}, ...["Seller", "Capabilities", "Webhooks", "Breaker", "Last success", "Attention", ""].map(
        (h) => el("th", { text: h })))),
      this.table));
  }

  async refresh() {
    const page = await api("GET", "/api/v1/sellers?limit=100");
    clear(this.table);
    for (const s of page.sellers) {
      const c = s.capabilities;
      const caps = c
        ? "AdCP " + c.major_versions.join(", ") + " · " + c.supported_protocols.join(", ") +
          " · replay " + (c.replay_ttl_seconds ? duration(c.replay_ttl_seconds * 1000) : "none") +
          " · fetched " + relative(c.fetched_at_ms)
        : "not fetched";
      const b = s.breaker;
      const breaker = b.state + (b.state === "closed" ? " (" + b.consecutive_failures + "/" + b.failure_threshold + " failures)"
        : b.retry_at_ms ? ", retry " + relative(b.retry_at_ms) : "");
      const webhooks = (s.webhook_mode || (c && c.webhook_signing ? "rfc9421" : "hmac") + " (from capabilities)");
      const notes = el("ul", { class: "diagnostics" });
      for (const d of s.diagnostics) notes.append(el("li", { text: d }));
      this.table.append(el("tr", { "data-seller-id": s.seller_id },
        el("td", {}, el("strong", { text: s.seller_id }), el("br"), el("small", { text: s.mcp_url })),
        el("td", { text: caps }),
        el("td", { text: webhooks }),
        el("td", {}, el("span", { class: "badge breaker-" + b.state, text: breaker })),
        el("td", { text: s.last_success_at_ms ? relative(s.last_success_at_ms) : "never recorded" }),
        el("td", {}, s.diagnostics.length ? notes : "—"),
        el("td", {}, el("button", { type: "button", class: "refresh-capabilities", onclick: () => this.refreshCapabilities(s.seller_id), text: "Refresh capabilities" }))));
    }
    if (!page.sellers.length) this.table.append(el("tr", {}, el("td", { colspan: "7", text: "No sellers registered." })));
  }

  async refreshCapabilities(id) {
    try {
      await api("POST", "/api/v1/sellers/" + encodeURIComponent(id) + "/capabilities");
      this.result.className = "ok";
      this.result.textContent = "Capabilities of " + id + " refreshed.";
    } catch (e) {
      this.result.className = "error";
      this.result.textContent = "Refreshing " + id + " failed: " + e.message;
    }
    await refresh(true);
  }
}

// --- health ------------------------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs) {
  const n = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, String(v));
  return n;
}

// A horizontal bar chart of [label, count] rows, in SVG (no inline style needed).
function barChart(id, rows) {
  if (!rows.length) return el("p", { id, class: "empty", text: "None." });
  const max = Math.max(...rows.map((r) => r[1]), 1);
  const rowH = 22, labelW = 170, barW = 320;
  const chart = svg("svg", { id, class: "chart", width: labelW + barW + 60, height: rows.length * rowH + 4, role: "img" });
  rows.forEach(([label, count], i) => {
    const y = i * rowH + 2;
    const text = svg("text", { x: 0, y: y + 15, class: "chart-label" });
    text.textContent = label;
    const w = Math.max(2, Math.round((count / max) * barW));
    const bar = svg("rect", { x: labelW, y, width: w, height: rowH - 6, class: "chart-bar" });
    const value = svg("text", { x: labelW + w + 6, y: y + 15, class: "chart-value" });
    value.textContent = String(count);
    chart.append(text, bar, value);
  });
  return chart;
}

class HealthView {
  render(root) {
    root.append(el("h2", { text: "Health" }));
    this.body = el("div", { id: "health" });
    root.append(this.body);
  }

  async refresh() {
    const s = await api("GET", "/api/v1/summary");
    clear(this.body).append(
      el("p", { id: "open-operations", text: s.open_operations + " open operations" }),
      el("h3", { text: "Operations by status" }),
      barChart("chart-status", s.operations_by_status.map((c) => [c.status, c.count])),
      el("h3", { text: "Webhook rejections by reason" }),
      barChart("chart-rejections", s.webhook_rejections.map((r) => [r.reason, r.count])),
      el("h3", { text: "Seller errors by seller" }),
      barChart("chart-seller-errors", s.seller_errors.map((r) => [r.seller_id, r.count])));
  }
}

// --- start -------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("sign-in-form").addEventListener("submit", signIn);
  document.getElementById("sign-out").addEventListener("click", () => signOut(""));
  window.addEventListener("hashchange", navigate);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) refresh();
  });
  setInterval(() => {
    if (!document.hidden) refresh();
  }, REFRESH_MS);
  navigate();
});

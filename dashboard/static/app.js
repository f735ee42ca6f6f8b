// tokentide web UI: the live board, a session's page and the usage page, over the JSON API and
// its event stream (/api/v1/stream). No framework, no CDN: uPlot is vendored from npm.
"use strict";

class HttpError extends Error {
  constructor(path, status) {
    super(`${path}: ${status}`);
    this.status = status;
  }
}

const api = (path) =>
  fetch(path, { headers: { Accept: "application/json" }, credentials: "same-origin" }).then((r) => {
    if (!r.ok) throw new HttpError(path, r.status);
    return r.json();
  });

const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
};

const usd = (x) => (x == null ? "unknown" : `$${x < 1 ? x.toFixed(4) : x.toFixed(2)}`);
const kilo = (n) => (n >= 1e6 ? `${(n / 1e6).toFixed(n % 1e6 ? 1 : 0)}M` : n >= 1e3 ? `${Math.round(n / 1e3)}k` : `${n}`);
const ago = (iso) => {
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  return s < 60 ? `${Math.round(s)}s ago` : s < 3600 ? `${Math.round(s / 60)} min ago` : `${Math.round(s / 3600)} h ago`;
};
const level = (ratio) => (ratio >= 0.95 ? "critical" : ratio >= 0.8 ? "warning" : "ok");
const short = (s, n = 12) => (s && s.length > n ? `${s.slice(0, n)}…` : s || "—");

function contextText(c) {
  const parts = [`${(c.ratio * 100).toFixed(1)}% of ${kilo(c.limit)}`];
  if (c.predicted_requests_left != null) parts.push(`~${Math.round(c.predicted_requests_left)} requests left`);
  if (c.predicted_minutes_left != null) parts.push(`~${Math.round(c.predicted_minutes_left)} min`);
  return parts.join(" · ");
}

// One card per session: agent, user, model, context gauge with prediction, cost, last activity.
function card(s) {
  const c = s.context;
  const node = el(
    "article",
    { class: `card ${level(c.ratio)}`, "data-session-id": s.session_id, "data-ratio": String(c.ratio) },
    el("a", { href: `/sessions/${encodeURIComponent(s.session_id)}` }, short(s.session_id, 18)),
    el("div", { class: "meta" }, `${s.agent} · ${short(s.user_id)} · ${c.model || s.models[0] || "no model yet"}`),
    el("div", { class: "gauge", title: contextText(c) }, el("div", { class: "fill" })),
    el("div", { class: "meta context" }, contextText(c)),
    forecastLine(s),
    el(
      "div",
      { class: "numbers" },
      el("span", { class: "cost" }, usd(s.cost_usd)),
      el("span", {}, `${s.api_requests} requests`),
      el("span", { class: "last", "data-at": s.last_seen_at }, ago(s.last_seen_at)),
    ),
  );
  node.querySelector(".fill").style.width = `${Math.min(100, c.ratio * 100).toFixed(1)}%`;
  cardProjectAndPlan(node, s);
  return node;
}

// The session's expected cost at its end (its own pace; its project's past sessions) next to
// the time until the next compaction (dashboard.session_forecast).
function forecastLine(s) {
  const f = s.forecast;
  if (!f) return "";
  const parts = [];
  if (f.own_pace_usd != null) parts.push(`${usd(f.own_pace_usd)} at this pace`);
  if (f.project_usd != null) parts.push(`${usd(f.project_usd)} typical of ${short(f.project, 16)} (${f.history_sessions} sessions)`);
  const head = parts.length ? "forecast " : "";
  if (!parts.length) parts.push(f.project ? `no cost forecast yet (${f.history_sessions} ended sessions of ${short(f.project, 16)})` : "no cost forecast (no project)");
  if (f.minutes_to_compaction != null) parts.push(`compaction in ~${Math.round(f.minutes_to_compaction)} min`);
  return el("div", { class: "meta forecast" }, head + parts.join(" · "));
}

// --- issue 17: plans and projects -------------------------------------------------------------

// A plan item's text as stored: the text, a keyed hash (privacy "hash") or none ("drop").
const planText = (item) => {
  const text = item.status === "in_progress" ? item.active_form || item.content : item.content || item.active_form;
  if (text == null) return "(text not kept)";
  return text.startsWith("redacted:") ? "(text hashed)" : text;
};

// The card's project line and plan line (the item in progress, "3 of 7 done"), when known.
function cardProjectAndPlan(node, s) {
  if (s.project) node.dataset.project = s.project;
  node.dataset.status = s.status;
  node.querySelector(".numbers").before(...planAndProjectLines(s));
}

// On the board: the cards of a project with more than one active session say so.
function flagParallel(cards) {
  const active = new Map();
  for (const c of cards.querySelectorAll("article.card[data-project]")) {
    if (c.dataset.status === "active") active.set(c.dataset.project, (active.get(c.dataset.project) || 0) + 1);
  }
  for (const c of cards.querySelectorAll("article.card[data-project]")) {
    const n = active.get(c.dataset.project) || 0;
    const line = c.querySelector(".project");
    line.querySelector(".badge")?.remove();
    if (n > 1 && c.dataset.status === "active") line.append(el("span", { class: "badge parallel", title: "sessions active at once on this project" }, `${n} in parallel`));
  }
}

function planAndProjectLines(s) {
  const out = [];
  if (s.project) {
    const branch = s.workspace && s.workspace.git_branch ? ` · ${s.workspace.git_branch}` : "";
    out.push(el("div", { class: "meta project" }, el("a", { class: "project-link", href: `/projects/${encodeURIComponent(s.project)}` }, s.project), branch));
  }
  const p = s.plan;
  if (p && p.total) {
    out.push(
      el(
        "div",
        { class: "meta plan", "data-done": String(p.done), "data-total": String(p.total) },
        el("span", { class: "plan-count" }, `${p.done} of ${p.total} done`),
        p.current ? el("span", { class: "plan-current" }, ` · ${planText(p.current)}`) : "",
      ),
    );
  }
  return out;
}

// The session page's plan: every item with its status, the version and when it changed.
function planSection(s) {
  const target = document.getElementById("plan");
  if (!target) return;
  const p = s.plan;
  if (!p) {
    target.replaceChildren(el("p", { class: "empty" }, "No plan reported (the Claude Code hook reports the todo list)."));
    return;
  }
  const mark = { completed: "✔", in_progress: "▶", pending: "○" };
  target.replaceChildren(
    el("p", { class: "meta", id: "plan-summary" }, `${p.done} of ${p.total} done · version ${p.version} · ${ago(p.updated_at)}${p.text_mode === "kept" ? "" : ` · texts ${p.text_mode} (privacy)`}`),
    el("ol", { class: "plan-items" }, ...p.items.map((i) => el("li", { class: `plan-item ${i.status}`, "data-status": i.status }, `${mark[i.status] || "·"} `, planText(i)))),
  );
}

// /projects: every project with its sessions' tokens and cost; /projects/<name>: its sessions,
// the active ones together (flagged when more than one is active).
async function projectsPage() {
  const name = location.pathname.startsWith("/projects/") ? decodeURIComponent(location.pathname.slice("/projects/".length)) : null;
  const tokens = (t) => t.input + t.output + t.cache_read + t.cache_creation;
  const main = document.getElementById("projects-main");
  if (name == null) {
    const list = (await api("/api/v1/projects")).projects;
    const table = el(
      "table",
      { id: "projects" },
      el("tr", {}, ...["project", "sessions", "active", "cost", "input", "output", "cache read", "cache write", "tokens"].map((h) => el("th", {}, h))),
      ...list.map((p) =>
        el(
          "tr",
          { "data-project": p.project, "data-parallel": String(p.parallel), class: p.parallel ? "parallel" : "" },
          el("td", {}, el("a", { href: `/projects/${encodeURIComponent(p.project)}` }, p.project), p.parallel ? el("span", { class: "badge" }, `${p.active_sessions} in parallel`) : ""),
          ...[p.sessions, p.active_sessions, usd(p.cost_usd), p.tokens.input, p.tokens.output, p.tokens.cache_read, p.tokens.cache_creation, tokens(p.tokens)].map((v) => el("td", {}, v)),
        ),
      ),
    );
    main.replaceChildren(el("section", {}, el("h2", {}, "Projects"), list.length ? table : el("p", { class: "empty" }, "No project yet: sessions get one from the hook (git repository or working directory) or the project / service.namespace resource attribute.")));
    return;
  }
  const render = async () => {
    const d = await api(`/api/v1/projects/${encodeURIComponent(name)}`);
    const p = d.project;
    document.getElementById("title").textContent = `Project ${p.project}`;
    const active = el(
      "section",
      { id: "active", "data-parallel": String(p.parallel) },
      el("h2", {}, p.parallel ? `${p.active_sessions} sessions active in parallel` : `Active sessions (${p.active_sessions})`),
      el("div", { class: "cards" }, ...d.active.map(card)),
    );
    if (p.parallel) active.classList.add("parallel");
    const rows = d.inactive.map((s) =>
      el("tr", { "data-session-id": s.session_id }, el("td", {}, el("a", { href: `/sessions/${encodeURIComponent(s.session_id)}` }, short(s.session_id, 18))), ...[s.status, usd(s.cost_usd), tokens(s.tokens), s.plan && s.plan.total ? `${s.plan.done} of ${s.plan.total} done` : "—", ago(s.last_seen_at)].map((v) => el("td", {}, v))),
    );
    main.replaceChildren(
      el("section", {}, el("table", { id: "project-totals" }, ...[["sessions", p.sessions], ["cost", usd(p.cost_usd)], ["tokens in / out", `${p.tokens.input} / ${p.tokens.output}`], ["cache read / write", `${p.tokens.cache_read} / ${p.tokens.cache_creation}`], ["API requests", p.api_requests]].map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, v))))),
      active,
      el("section", {}, el("h2", {}, "Other sessions"), el("table", { id: "inactive" }, el("tr", {}, ...["session", "status", "cost", "tokens", "plan", "last activity"].map((h) => el("th", {}, h))), ...rows)),
    );
  };
  await render();
  setInterval(render, 5000);
}

function signalItem(sig) {
  return el(
    "li",
    { "data-session-id": sig.session_id || "", "data-kind": sig.kind },
    el("span", { class: `kind ${sig.kind}` }, sig.kind.replace(/_/g, " ")),
    ` ${short(sig.session_id || "", 10)} `,
    el("div", { class: "meta" }, sig.message || `${(sig.ratio * 100).toFixed(0)}% of ${kilo(sig.limit)}`),
  );
}

function stream(onSession, onSignal, onState) {
  const source = new EventSource("/api/v1/stream");
  source.addEventListener("session", (e) => onSession(JSON.parse(e.data)));
  source.addEventListener("signal", (e) => onSignal(JSON.parse(e.data)));
  source.onopen = () => onState("live");
  source.onerror = () => onState("reconnecting…"); // EventSource retries with Last-Event-ID
  return source;
}

async function board() {
  const cards = document.getElementById("cards");
  const feed = document.getElementById("feed");
  const empty = document.getElementById("no-sessions");
  // The event stream's sessions carry no forecast: the last one the list gave is kept.
  const forecasts = new Map();
  const show = (s) => {
    if (s.status === "ended") return;
    if (s.forecast) forecasts.set(s.session_id, s.forecast);
    else s.forecast = forecasts.get(s.session_id) || null;
    const old = cards.querySelector(`[data-session-id="${CSS.escape(s.session_id)}"]`);
    const fresh = card(s);
    if (old) old.replaceWith(fresh);
    else cards.prepend(fresh);
    empty.hidden = true;
    flagParallel(cards);
  };
  stream(
    show,
    (sig) => {
      feed.prepend(signalItem(sig));
      while (feed.children.length > 100) feed.lastChild.remove();
    },
    (state) => (document.getElementById("connection").textContent = state),
  );
  const page = await api("/api/v1/sessions?limit=200");
  page.sessions.reverse().forEach(show);
  // Forecasts move with cost and time: the list (with them) is read again every minute.
  setInterval(async () => (await api("/api/v1/sessions?limit=200&active=true")).sessions.reverse().forEach(show), 60000);
  for (const s of page.sessions.filter((s) => s.signals)) s.signals.forEach((g) => feed.append(signalItem(g)));
  setInterval(() => cards.querySelectorAll(".last").forEach((n) => (n.textContent = ago(n.dataset.at))), 5000);
}

function chart(target, title, labels, xs, series, opts = {}) {
  target.replaceChildren();
  if (!xs.length) {
    target.append(el("p", { class: "empty" }, "No data yet."));
    return;
  }
  const colours = ["#58a6ff", "#3fb950", "#d29922", "#f85149", "#bc8cff", "#39c5cf"];
  // eslint-disable-next-line no-undef
  new uPlot(
    {
      title,
      width: Math.max(320, target.clientWidth || 800),
      height: 260,
      series: [
        {},
        ...labels.map((label, i) => ({
          label,
          stroke: colours[i % colours.length],
          width: 2,
          ...(opts.bars ? { fill: `${colours[i % colours.length]}99`, paths: uPlot.paths.bars({ size: [0.6, 40] }) } : {}),
        })),
      ],
      axes: [{ stroke: "#8a96a3" }, { stroke: "#8a96a3", size: 80 }],
      ...Object.fromEntries(Object.entries(opts).filter(([k]) => k !== "bars")),
    },
    [xs, ...series],
    target,
  );
}

async function sessionPage() {
  const id = decodeURIComponent(location.pathname.split("/").pop());
  const render = async () => {
    const s = await api(`/api/v1/sessions/${encodeURIComponent(id)}`);
    document.getElementById("title").textContent = `Session ${s.session_id}`;
    document.getElementById("card-slot").replaceChildren(card(s));
    const t = s.tokens;
    const rows = [
      ["agent", s.agent], ["user", s.user_id || "—"], ["status", s.status], ["models", s.models.join(", ")],
      ["cost", usd(s.cost_usd)], ["API requests / errors", `${s.api_requests} / ${s.api_errors}`],
      ["tokens in / out", `${t.input} / ${t.output}`], ["cache read / write", `${t.cache_read} / ${t.cache_creation}`],
      ["tool calls / failures", `${s.tool_calls} / ${s.tool_failures}`], ["compactions", s.context.compactions],
      ["lines + / −", `${s.lines_added} / ${s.lines_removed}`],
      ["context window", windowText(s.context)],
      ["project", s.project ? `${s.project}${s.workspace && s.workspace.git_branch ? ` (${s.workspace.git_branch})` : ""}` : "—"],
    ];
    document.getElementById("totals").replaceChildren(...rows.map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, v))));
    sources(s.by_source || []);
    planSection(s);
    await timeline(id, s);
  };
  await render();
  stream((s) => s.session_id === id && render(), () => {}, () => {});
}

const WINDOW_SOURCES = { agent: "as the agent reports it", long_context: "long-context variant", model_table: "from the model table", default: "default, model unknown" };

function windowText(c) {
  const parts = [`${c.limit.toLocaleString("en")} tokens${c.limit_source ? ` (${WINDOW_SOURCES[c.limit_source] || c.limit_source})` : ""}`];
  if (c.auto_compact_at != null) parts.push(`the agent compacts at ${c.auto_compact_at.toLocaleString("en")}`);
  return parts.join(" · ");
}

// Usage by source: the main conversation, each subagent type, auxiliary requests, per skill
// and MCP server where the agent says.
function sources(list) {
  const table = document.getElementById("sources");
  const name = (x) => [x.agent_name ? `${x.query_source}: ${x.agent_name}` : x.query_source, x.skill && `skill ${x.skill}`, x.mcp_server && `MCP ${x.mcp_server}`].filter(Boolean).join(" · ");
  table.replaceChildren(
    el("tr", {}, ...["source", "cost", "requests", "input", "output", "cache read", "cache write"].map((h) => el("th", {}, h))),
    ...list.map((x) =>
      el("tr", { "data-source": x.query_source, "data-agent-name": x.agent_name ?? "" }, ...[name(x), usd(x.cost_usd), x.requests, x.tokens.input, x.tokens.output, x.tokens.cache_read, x.tokens.cache_creation].map((v) => el("td", {}, v))),
    ),
  );
}

async function timeline(id, s) {
  const table = document.getElementById("timeline");
  let items = [];
  try {
    items = (await api(`/api/v1/sessions/${encodeURIComponent(id)}/timeline`)).items;
  } catch {
    items = (s.signals || []).map((g) => ({ at: g.at, kind: g.kind, summary: g.message }));
  }
  table.replaceChildren(
    el("tr", {}, el("th", {}, "time"), el("th", {}, "what"), el("th", {}, "")),
    // A signal shows its own kind (context_warning, ...); events their timeline kind.
    ...items.map((i) => el("tr", { "data-kind": i.kind }, el("td", {}, new Date(i.at).toLocaleTimeString()), el("td", {}, i.kind === "signal" ? i.name || i.kind : i.kind), el("td", {}, i.summary || ""))),
  );
  const points = items.filter((i) => i.context_tokens != null);
  chart(
    document.getElementById("context-chart"),
    "context tokens per request",
    ["context tokens", "window"],
    points.map((p) => Date.parse(p.at) / 1000),
    [points.map((p) => p.context_tokens), points.map(() => s.context.limit)],
  );
}

async function usagePage() {
  const day = await api("/api/v1/usage?group_by=day");
  const byDay = new Map(day.groups.map((g) => [g.key, g]));
  // Every one of the last 30 UTC days, quiet ones at zero.
  const today = Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth(), new Date().getUTCDate());
  const days = Array.from({ length: 30 }, (_, i) => new Date(today - (29 - i) * 86400e3).toISOString().slice(0, 10));
  chart(
    document.getElementById("daily-chart"),
    "per day",
    ["cost (USD)", "output tokens (k)"],
    days.map((d) => Date.parse(`${d}T00:00:00Z`) / 1000),
    [days.map((d) => byDay.get(d)?.cost_usd ?? 0), days.map((d) => (byDay.get(d)?.tokens.output ?? 0) / 1000)],
    { bars: true },
  );
  const select = document.getElementById("group-by");
  const render = async () => {
    const usage = await api(`/api/v1/usage?group_by=${select.value}`);
    const table = document.getElementById("groups");
    table.replaceChildren(
      el("tr", {}, ...[select.value, "cost", "input", "output", "cache read", "cache write", "requests", "sessions"].map((h) => el("th", {}, h))),
      ...usage.groups.map((g) =>
        el(
          "tr",
          { "data-key": g.key ?? "" },
          ...[g.key ?? "(none)", usd(g.cost_usd), g.tokens.input, g.tokens.output, g.tokens.cache_read, g.tokens.cache_creation, g.requests, g.sessions].map((v) => el("td", {}, v)),
        ),
      ),
    );
    // Over time, per group: the (up to) six costliest groups, one line each, per UTC day.
    const series = await api(`/api/v1/usage?group_by=${select.value}&bucket=day`);
    const top = usage.groups.slice(0, 6).map((g) => g.key);
    const cell = new Map(series.groups.map((g) => [`${g.key}|${g.start.slice(0, 10)}`, g]));
    const xs = days.map((d) => Date.parse(`${d}T00:00:00Z`) / 1000);
    const label = (k) => short(k ?? "(none)", 16);
    chart(
      document.getElementById("by-group-chart"),
      `cost per day by ${select.value}`,
      top.map(label),
      xs,
      top.map((k) => days.map((d) => cell.get(`${k}|${d}`)?.cost_usd ?? 0)),
    );
    const total = (g) => (g ? g.tokens.input + g.tokens.output + g.tokens.cache_read + g.tokens.cache_creation : 0);
    chart(
      document.getElementById("by-group-tokens"),
      `tokens per day by ${select.value} (thousands)`,
      top.map(label),
      xs,
      top.map((k) => days.map((d) => total(cell.get(`${k}|${d}`)) / 1000)),
    );
  };
  select.addEventListener("change", render);
  await render();
}

// Without credentials the API answers 401: ask for the tenant's read key. The server answers
// with an HttpOnly session cookie (the key itself is never kept by the browser), which the
// event stream sends too.
function login(message) {
  const key = el("input", { id: "key", type: "password", placeholder: "tt_… read key", autocomplete: "off" });
  const form = el(
    "form",
    { id: "login" },
    el("h2", {}, "Sign in with your team's read key"),
    el("p", { class: "meta", id: "login-message" }, message || "tokentide admin key create --tenant <team> --scope read"),
    key,
    el("button", { type: "submit" }, "Sign in"),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const r = await fetch("/api/v1/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      credentials: "same-origin",
      body: JSON.stringify({ key: key.value.trim() }),
    });
    if (r.ok) location.reload();
    else form.querySelector(".meta").textContent = (await r.json()).detail;
  });
  document.querySelector("main").replaceChildren(el("section", {}, form));
}

// Who is signed in, in the header, with a sign-out button for a web session (the server ends
// the session, on every replica, before the cookie is cleared).
async function account() {
  let me;
  try {
    me = await api("/api/v1/me");
  } catch {
    return; // not signed in: the page itself asks for a key
  }
  const span = el("span", { id: "account", class: "meta", "data-via": me.via }, me.via === "open" ? "open mode" : me.tenant);
  if (me.via === "web_session") {
    const out = el("button", { id: "logout", type: "button" }, "Sign out");
    out.addEventListener("click", async () => {
      await fetch("/api/v1/logout", { method: "POST", credentials: "same-origin" });
      location.reload();
    });
    span.append(" ", out);
  }
  document.querySelector("header").append(span);
}

// The webhook delivery log: which signal went where, how it went, what comes next.
async function webhooksPage() {
  const render = async () => {
    const page = await api("/api/v1/webhooks/deliveries?limit=200");
    const table = document.getElementById("deliveries");
    const when = (iso) => (iso ? new Date(iso).toLocaleString() : "—");
    table.replaceChildren(
      el("tr", {}, ...["time", "signal", "session", "webhook", "status", "attempts", "last answer", "next attempt"].map((h) => el("th", {}, h))),
      ...page.deliveries.map((d) =>
        el(
          "tr",
          { "data-status": d.status, "data-session-id": d.session_id, class: `delivery ${d.status}` },
          el("td", {}, when(d.updated_at)),
          el("td", {}, d.kind),
          el("td", {}, d.session_id ? el("a", { href: `/sessions/${encodeURIComponent(d.session_id)}` }, short(d.session_id, 18)) : "— (a budget)"),
          el("td", {}, short(d.url, 40)),
          el("td", { class: "status" }, d.status),
          el("td", {}, d.attempts),
          el("td", {}, d.last_http_status ?? d.last_error ?? "—"),
          el("td", {}, when(d.next_attempt_at)),
        ),
      ),
    );
    if (!page.deliveries.length) table.append(el("tr", {}, el("td", { class: "empty" }, "No delivery yet.")));
  };
  await render();
  setInterval(render, 5000);
}

// Budgets: each one's spend in its current period, the forecast at the period's end, a bar.
async function budgetsPage() {
  const render = async () => {
    const list = (await api("/api/v1/budgets")).budgets;
    const table = document.getElementById("budgets");
    const until = (iso) => new Date(iso).toISOString().slice(0, 16).replace("T", " ");
    table.replaceChildren(
      el("tr", {}, ...["budget", "period", "amount", "spent", "forecast", "", "status", "until (UTC)"].map((h) => el("th", {}, h))),
      ...list.map((b) => {
        const bar = el("div", { class: "gauge" }, el("div", { class: "fill" }), el("div", { class: "mark" }));
        bar.querySelector(".fill").style.width = `${Math.min(100, (100 * b.spend_usd) / b.amount_usd).toFixed(1)}%`;
        bar.querySelector(".mark").style.left = `${Math.min(100, (100 * b.forecast_usd) / b.amount_usd).toFixed(1)}%`;
        return el(
          "tr",
          { class: `budget ${b.status}`, "data-budget-id": b.budget_id, "data-status": b.status },
          el("td", {}, b.scope === "tenant" ? "tenant" : `${b.scope} ${b.value}`),
          el("td", {}, b.period),
          el("td", {}, usd(b.amount_usd)),
          el("td", { class: "spent" }, usd(b.spend_usd)),
          el("td", { class: "forecast" }, usd(b.forecast_usd)),
          el("td", { class: "bar" }, bar),
          el("td", { class: "status" }, b.status),
          el("td", {}, until(b.period_end)),
        );
      }),
    );
    if (!list.length) table.append(el("tr", {}, el("td", { class: "empty" }, "No budget yet.")));
  };
  await render();
  setInterval(render, 15000);
}

const pages = { board, session: sessionPage, usage: usagePage, webhooks: webhooksPage, budgets: budgetsPage, projects: projectsPage, ...window.insightPages };
account();
pages[document.body.dataset.page]().catch((err) => {
  if (err instanceof HttpError && err.status === 401) return login();
  document.querySelector("main").prepend(el("p", { class: "empty", id: "error" }, String(err)));
});

// tokentide web UI: the recommendations page and the cross-model comparison, over
// /api/v1/recommendations and /api/v1/compare. Loaded before app.js, whose helpers (api, el,
// usd, short) it uses when app.js calls these pages.
"use strict";

const KINDS = {
  cache: "Cache reads below the team's",
  compaction: "Repeated compaction",
  smaller_model: "A smaller model would do",
  retry_storm: "Retry storm",
  idle_context: "Idle large context",
};

const subjectText = (s) =>
  Object.entries(s)
    .filter(([, v]) => v != null)
    .map(([k, v]) => `${k.replace("_", " ")}: ${v}`)
    .join(" · ");

const evidenceText = (e) =>
  Object.entries(e)
    .filter(([, v]) => v != null)
    .map(([k, v]) => `${k.replaceAll("_", " ")} ${typeof v === "number" && !Number.isInteger(v) ? v.toFixed(3) : typeof v === "number" ? v.toLocaleString("en") : v}`)
    .join(", ");

async function recommendationsPage() {
  const select = document.getElementById("window-days");
  const render = async () => {
    const body = await api(`/api/v1/recommendations?window_days=${select.value}`);
    document.getElementById("recommendations-total").textContent =
      `${body.recommendations.length} recommendation(s), ${usd(body.savings_usd)} in all · prices ${body.prices}`;
    const table = document.getElementById("recommendations");
    table.replaceChildren(
      el("tr", {}, ...["saves", "what", "about", "why", "evidence"].map((h) => el("th", {}, h))),
      ...body.recommendations.map((r) =>
        el(
          "tr",
          { class: `recommendation ${r.kind}`, "data-kind": r.kind, "data-savings-nanos": String(r.savings_nanos) },
          el("td", { class: "savings" }, usd(r.savings_usd)),
          el("td", {}, KINDS[r.kind] ?? r.kind),
          el(
            "td",
            {},
            r.subject.session_id
              ? el("a", { href: `/sessions/${encodeURIComponent(r.subject.session_id)}` }, subjectText(r.subject))
              : subjectText(r.subject),
          ),
          el("td", { class: "message" }, r.message),
          el("td", { class: "meta" }, evidenceText(r.evidence)),
        ),
      ),
    );
    if (!body.recommendations.length) table.append(el("tr", {}, el("td", { class: "empty" }, "Nothing to recommend in this window.")));
  };
  select.addEventListener("change", render);
  await render();
}

async function comparePage() {
  const by = document.getElementById("compare-by");
  const days = document.getElementById("compare-days");
  const top = document.getElementById("compare-top");
  const render = async () => {
    const to = new Date();
    const from = new Date(to.getTime() - Number(days.value) * 86400e3);
    const q = new URLSearchParams({ group_by: by.value, from: from.toISOString(), to: to.toISOString() });
    const body = await api(`/api/v1/compare?${q}`);
    document.getElementById("compare-prices").textContent = `prices ${body.prices}`;
    const target = document.getElementById("compare-groups");
    target.replaceChildren(
      ...body.groups.map((g) => {
        const t = g.tokens;
        const rows = g.models.slice(0, Number(top.value)).map((m) =>
          el(
            "tr",
            { class: `model-cost ${m.difference_usd < 0 ? "cheaper" : "dearer"}`, "data-model": m.model, "data-cost-nanos": String(m.cost_nanos) },
            el("td", { title: m.snapshots.length ? `also ${m.snapshots.join(", ")}` : "" }, m.model + (m.assumed ? " (assumed price)" : "") + (m.snapshots.length ? " *" : "")),
            el("td", {}, m.provider ?? "—"),
            el("td", {}, usd(m.cost_usd)),
            el("td", {}, `${m.difference_usd < 0 ? "−" : "+"}${usd(Math.abs(m.difference_usd))}`),
          ),
        );
        return el(
          "div",
          { class: "compare-group", "data-key": g.key ?? "" },
          el("h3", {}, `${by.value} ${g.key ?? "(none)"}: ${usd(g.cost_usd)} actual, ${g.requests} requests`),
          el(
            "p",
            { class: "meta" },
            `input ${kilo(t.input)} · output ${kilo(t.output)} (reasoning ${kilo(t.reasoning)}) · cache read ${kilo(t.cache_read)} · cache write ${kilo(t.cache_creation)} (1 h ${kilo(t.cache_creation_1h)})` +
              (g.unpriced_requests ? ` · ${g.unpriced_requests} request(s) of unknown price left out of the actual cost` : ""),
          ),
          el("table", {}, el("tr", {}, ...["model", "provider", "would have cost", "vs actual"].map((h) => el("th", {}, h))), ...rows),
        );
      }),
    );
    if (!body.groups.length) target.append(el("p", { class: "empty" }, "No usage in this window."));
  };
  for (const s of [by, days, top]) s.addEventListener("change", render);
  await render();
}

window.insightPages = { recommendations: recommendationsPage, compare: comparePage };

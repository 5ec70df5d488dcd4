// #/billing: the cost report for a chosen period (UTC days): the hourly cost chart, the
// report's table and totals, and its CSV.
import { api, request, withQuery } from "./api.js";
import { cell, clear, h, setText, table } from "./dom.js";
import { day, duration, money, tagsText, when } from "./format.js";
import { clearNotice, showError } from "./notice.js";

const DAY = 86400000;

function period(from, through) {
  const end = new Date(Date.parse(`${through}T00:00:00Z`) + DAY);
  return { start: `${from}T00:00:00Z`, end: end.toISOString().replace(".000Z", "Z") };
}

function dataUrl(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

export function show(main) {
  const today = day(new Date());
  const from = h("input", { type: "date", id: "billing-from", value: today, required: true });
  const through = h("input", { type: "date", id: "billing-through", value: today, required: true });
  const quick = (label, days) => h("button", { type: "button", class: "small", onclick: () => {
    const now = new Date();
    from.value = days === "month" ? `${day(now).slice(0, 7)}-01` : day(new Date(now.getTime() - (days - 1) * DAY));
    through.value = day(now);
    load();
  } }, label);
  const form = h("form", { class: "inline", id: "billing-form", onsubmit: (e) => { e.preventDefault(); load(); } },
    h("label", {}, "From (UTC)", from), h("label", {}, "Through (UTC)", through),
    h("button", { type: "submit", class: "primary", id: "billing-show" }, "Show"),
    h("span", { class: "quick" }, quick("Today", 1), quick("7 days", 7), quick("This month", "month")));
  const summary = h("p", { id: "billing-summary" });
  const csv = h("a", { class: "button", id: "billing-csv", download: "computed-cost-report.csv" }, "Download CSV");
  const chart = h("img", { id: "billing-chart", class: "chart", alt: "Cost per hour, stacked by size", hidden: true });
  const rows = table(["Hour (UTC)", "Instance", "Size", "Image", "Tags", "Running", "Billed", "Rate/h", "Cost"],
    { id: "billing-table", cards: false });
  const bySize = h("ul", { id: "billing-by-size", class: "plain" });
  const none = h("p", { class: "muted", hidden: true }, "No usage in this period.");
  main.append(h("h1", {}, "Billing"), form, summary, h("div", { class: "actions" }, csv),
    h("figure", {}, chart), h("h2", {}, "Report"), none, h("div", { class: "table-wrap" }, rows.el),
    h("h2", {}, "By size"), bySize);

  let stopped = false;
  let generation = 0;

  async function load() {
    if (!from.value || !through.value) return;
    const mine = ++generation;
    clearNotice();
    const p = period(from.value, through.value);
    csv.href = withQuery("/v1/billing/report", { ...p, format: "csv" });
    csv.download = `computed-cost-report-${from.value}-to-${through.value}.csv`;
    try {
      const [report, png] = await Promise.all([
        api("GET", withQuery("/v1/billing/report", p)),
        request("GET", withQuery("/v1/billing/report", { ...p, format: "png" }), { accept: "image/png" })
          .then((r) => r.blob()).then(dataUrl),
      ]);
      if (stopped || mine !== generation) return;
      chart.src = png; // a data: URL, made fresh each time (the CSP allows data: images)
      chart.hidden = false;
      render(report);
    } catch (e) {
      if (!stopped) showError(e);
    }
  }

  function render(report) {
    const total = report.total.map((t) => money(t.cost, t.currency)).join(" + ") || "0";
    setText(summary, `${when(report.start)} to ${when(report.end)}: ${total} (${report.policy} billing, ${report.rows.length} line items)`);
    clear(rows.tbody);
    for (const r of report.rows) {
      rows.tbody.append(h("tr", {},
        cell("Hour", h("span", { class: "nowrap" }, when(r.hour).replace(" UTC", ""))), cell("Instance", h("span", { class: "mono" }, r.instance_id)),
        cell("Size", r.size), cell("Image", r.image), cell("Tags", tagsText(r.tags)),
        cell("Running", duration(r.seconds_running)), cell("Billed", `${r.quantity} ${report.unit}`),
        cell("Rate", money(r.rate_per_hour, r.currency)), cell("Cost", h("span", { class: "num" }, money(r.cost, r.currency)))));
    }
    none.hidden = report.rows.length > 0;
    rows.el.hidden = report.rows.length === 0;
    clear(bySize);
    for (const t of (report.totals && report.totals.size) || []) {
      bySize.append(h("li", {}, h("span", {}, t.key), " ", h("span", { class: "num" }, money(t.cost, t.currency))));
    }
  }

  load();
  return { stop() { stopped = true; } };
}

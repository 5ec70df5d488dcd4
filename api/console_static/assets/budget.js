// #/budget: the account's monthly budget (amount, this month's spend and percentage, the
// action at 100%), set or removed here, and a month's budget events.
import { ApiError, api, poll, withQuery } from "./api.js";
import { append, cell, clear, h, option, table } from "./dom.js";
import { confirm } from "./dialog.js";
import { money, when } from "./format.js";
import { clearNotice, pollOk, showError, showInfo } from "./notice.js";

export function show(main) {
  const status = h("div", { id: "budget-status", class: "panel" });
  // the API checks the amount and says what is wrong with it
  const amount = h("input", { id: "budget-amount", inputmode: "decimal", required: true, placeholder: "25.00" });
  const action = h("select", { id: "budget-action" },
    option("notify", "notify: record an event"), option("stop", "stop: also stop running instances and refuse launches"));
  const save = h("button", { type: "submit", class: "primary", id: "budget-save" }, "Save budget");
  const remove = h("button", { type: "button", class: "danger", id: "budget-remove", hidden: true, onclick: removeBudget },
    "Remove budget");
  const form = h("form", { id: "budget-form", class: "inline", onsubmit: saveBudget },
    h("label", {}, "Monthly amount", amount), h("label", {}, "At 100%", action), save, remove);
  const month = h("input", { type: "month", id: "budget-month", value: new Date().toISOString().slice(0, 7),
    onchange: () => poller.now() });
  const events = table(["When (UTC)", "Threshold", "Spend", "Budget", "Instances stopped"], { id: "budget-events" });
  const noEvents = h("p", { class: "muted" }, "No budget events this month.");
  main.append(h("h1", {}, "Budget"), status, form,
    h("div", { class: "bar" }, h("h2", {}, "Events"), h("label", { class: "inline-label" }, "Month ", month)),
    h("div", { class: "table-wrap" }, events.el), noEvents);

  let filled = false; // the form is filled from the budget once, not on every poll

  function renderStatus(b) {
    clear(status);
    remove.hidden = !b;
    if (!b) {
      status.append(h("p", { id: "budget-none" }, "No budget is set for this account."));
      return;
    }
    const percent = Number(b.percent);
    const bar = h("progress", { max: 100, value: Math.min(100, Number.isFinite(percent) ? percent : 0), id: "budget-progress" });
    bar.classList.toggle("over", b.over);
    append(status, [
      h("p", { class: "big" }, h("span", { id: "budget-spend" }, money(b.spend, b.currency)), " of ",
        h("span", { id: "budget-amount-shown" }, money(b.amount, b.currency)), ` in ${b.month} `,
        h("span", { id: "budget-percent", class: b.over ? "bad" : "" }, `(${b.percent}%)`)),
      bar,
      h("p", {}, `At 100%: ${b.action === "stop" ? "stop running instances and refuse launches and starts" : "notify"}.`),
      b.launches_refused ? h("p", { class: "bad" }, "Launches and starts are refused now: the spend is at or over the budget.") : null]);
    if (!filled) {
      amount.value = b.amount;
      action.value = b.action;
      filled = true;
    }
  }

  function renderEvents(list) {
    clear(events.tbody);
    for (const e of list) {
      events.tbody.append(h("tr", {},
        cell("When", when(e.at)), cell("Threshold", `${e.threshold}%`), cell("Spend", money(e.spend, e.currency)),
        cell("Budget", money(e.amount, e.currency)),
        cell("Instances stopped", e.instances_stopped === null || e.instances_stopped === undefined ? "—" : (e.instances_stopped.join(", ") || "none"))));
    }
    events.el.hidden = list.length === 0;
    noEvents.hidden = list.length > 0;
  }

  async function refresh() {
    let budget = null;
    try {
      budget = await api("GET", "/v1/budget");
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 404)) throw e;
    }
    renderStatus(budget);
    const found = await api("GET", withQuery("/v1/budget/events", { month: month.value }));
    renderEvents(found.events);
    pollOk();
  }

  const poller = poll(refresh, 10000, (e) => showError(e, { poll: true }));

  async function saveBudget(event) {
    event.preventDefault();
    clearNotice();
    try {
      const b = await api("PUT", "/v1/budget", { amount: amount.value.trim(), action: action.value });
      showInfo(`Budget set: ${money(b.amount, b.currency)} a month, ${b.action} at 100%.`);
    } catch (e) {
      showError(e);
    }
    poller.now();
  }

  async function removeBudget() {
    if (!(await confirm({ title: "Remove the budget?", text: "Its events are kept; nothing is refused for it any more.", ok: "Remove" }))) return;
    clearNotice();
    try {
      await api("DELETE", "/v1/budget");
      filled = false;
      amount.value = "";
      showInfo("Budget removed.");
    } catch (e) {
      showError(e);
    }
    poller.now();
  }

  return poller;
}

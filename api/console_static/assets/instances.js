// #/instances: every instance of the account (an admin's: all), polled every 2 s; rows are
// updated in place, so a poll never disturbs a click or a selection.
import { api, poll } from "./api.js";
import { cell, copyButton, h, setText, table } from "./dom.js";
import { money, nameOf, portText, uptime } from "./format.js";
import { pollOk, showError } from "./notice.js";

const COLUMNS = ["Instance", "Name", "State", "Size", "Image", "SSH", "Ports", "Uptime", "Cost so far"];

export function stateBadge(name) {
  return h("span", { class: `state state-${name}`, "data-state": name }, name);
}

export function setState(badge, name) {
  if (badge.dataset.state === name) return;
  badge.dataset.state = name;
  badge.className = `state state-${name}`;
  setText(badge, name);
}

function newRow(inst) {
  const link = h("a", { href: `#/instances/${encodeURIComponent(inst.id)}`, class: "mono" }, inst.id);
  const ssh = h("code", { class: "ssh" });
  const copy = copyButton(() => ssh.textContent);
  const parts = {
    name: h("span"), state: stateBadge(inst.state.name), size: h("span"), image: h("span"), ssh, copy,
    ports: h("span", { class: "ports" }), uptime: h("span"), cost: h("span", { class: "num" }),
  };
  const row = h("tr", { "data-id": inst.id },
    cell(COLUMNS[0], link), cell(COLUMNS[1], parts.name), cell(COLUMNS[2], parts.state),
    cell(COLUMNS[3], parts.size), cell(COLUMNS[4], parts.image),
    cell(COLUMNS[5], h("span", { class: "ssh-cell" }, ssh, copy)),
    cell(COLUMNS[6], parts.ports), cell(COLUMNS[7], parts.uptime), cell(COLUMNS[8], parts.cost));
  row.parts = parts;
  return row;
}

function fillRow(row, inst) {
  const p = row.parts;
  setText(p.name, nameOf(inst));
  setState(p.state, inst.state.name);
  setText(p.size, inst.size);
  setText(p.image, inst.image);
  setText(p.ssh, (inst.ssh && inst.ssh.command) || "");
  p.copy.hidden = !(inst.ssh && inst.ssh.command);
  setText(p.ports, (inst.ports || []).map(portText).join(", "));
  setText(p.uptime, uptime(inst));
  setText(p.cost, money(inst.cost_so_far, inst.currency));
}

export function show(main) {
  const list = table(COLUMNS, { id: "instances" });
  const empty = h("p", { class: "empty", hidden: true }, "No instances yet. ",
    h("a", { href: "#/launch" }, "Launch one"), ".");
  const more = h("p", { class: "muted", hidden: true }, "Showing the newest 100 instances.");
  main.append(
    h("div", { class: "bar" }, h("h1", {}, "Instances"),
      h("a", { class: "button primary", href: "#/launch", id: "launch-button" }, "Launch instances")),
    h("div", { class: "table-wrap" }, list.el), empty, more);
  const rows = new Map();

  async function refresh() {
    const data = await api("GET", "/v1/instances?limit=100");
    pollOk();
    const seen = new Set();
    let previous = null;
    for (const inst of data.instances) {
      seen.add(inst.id);
      let row = rows.get(inst.id);
      if (!row) {
        row = newRow(inst);
        rows.set(inst.id, row);
      }
      fillRow(row, inst);
      const wanted = previous ? previous.nextSibling : list.tbody.firstChild;
      if (wanted !== row) list.tbody.insertBefore(row, wanted);
      previous = row;
    }
    for (const [id, row] of rows) {
      if (!seen.has(id)) {
        row.remove();
        rows.delete(id);
      }
    }
    empty.hidden = data.instances.length > 0;
    list.el.hidden = data.instances.length === 0;
    more.hidden = !data.next_token;
  }

  return poll(refresh, 2000, (e) => showError(e, { poll: true }));
}

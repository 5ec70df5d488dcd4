// #/instances/ID: one instance, polled every 2 s: its details, stop/start/reboot/terminate
// (each confirmed in a dialog), its forwarded ports (add, remove) and its console output.
import { api, poll } from "./api.js";
import { cell, clear, copyButton, h, setText, table } from "./dom.js";
import { confirm } from "./dialog.js";
import { mib, money, nameOf, portText, tagsText, uptime, when } from "./format.js";
import { clearNotice, pollOk, showError, showInfo } from "./notice.js";
import { setState, stateBadge } from "./instances.js";

const ACTIONS = {
  stop: { label: "Stop", when: ["running"], text: "The guest is powered off (ACPI, forced after the stop timeout). Its disk and ports are kept.", danger: false },
  start: { label: "Start", when: ["stopped"], text: "The instance boots again with the same disk and ports.", danger: false },
  reboot: { label: "Reboot", when: ["running"], text: "The guest restarts; anything not saved to disk is lost.", danger: false },
  terminate: { label: "Terminate", when: ["pending", "running", "stopping", "stopped"], text: "The instance is shut down and its disk deleted. This cannot be undone.", danger: true },
};

export function show(main, id) {
  const base = `/v1/instances/${encodeURIComponent(id)}`;
  const badge = stateBadge("");
  badge.id = "detail-state";
  const fields = {};
  const field = (key, label) => {
    fields[key] = h("dd", { "data-field": key });
    return [h("dt", {}, label), fields[key]];
  };
  const ssh = h("code", { class: "ssh", id: "detail-ssh" });
  const buttons = {};
  for (const [name, a] of Object.entries(ACTIONS)) {
    buttons[name] = h("button", { type: "button", class: a.danger ? "danger" : "", id: `action-${name}`,
      onclick: () => act(name) }, a.label);
  }
  const ports = table(["Address", "Guest port", "Protocol", ""], { id: "ports" });
  const noPorts = h("p", { class: "muted" }, "No forwarded ports.");
  const guest = h("input", { type: "number", min: 1, max: 65535, required: true, id: "port-guest", inputmode: "numeric", placeholder: "80" });
  const hostPort = h("input", { type: "number", min: 1024, max: 65535, id: "port-host", inputmode: "numeric", placeholder: "any" });
  const portForm = h("form", { class: "inline", id: "port-form", onsubmit: addPort },
    h("label", {}, "Guest port", guest), h("label", {}, "Host port", hostPort),
    h("button", { type: "submit", class: "primary" }, "Forward"));
  const output = h("pre", { class: "console", id: "console-output", hidden: true });
  const outputButton = h("button", { type: "button", id: "console-button", onclick: loadConsole }, "Show console output");
  const outputTime = h("span", { class: "muted" });

  main.append(
    h("p", { class: "crumbs" }, h("a", { href: "#/instances" }, "← Instances")),
    h("div", { class: "title" }, h("h1", { class: "mono" }, id), badge),
    h("div", { class: "actions" }, Object.values(buttons)),
    h("dl", { class: "details" },
      field("name", "Name"), field("reason", "State reason"), field("size", "Size"), field("image", "Image"),
      field("key", "Key pair"), field("launched", "Launched"), field("uptime", "Uptime"),
      [h("dt", {}, "SSH"), h("dd", {}, h("span", { class: "ssh-cell" }, ssh, copyButton(() => ssh.textContent)))],
      field("ready", "Ready"), field("placement", "Placement"), field("cost", "Cost so far"), field("tags", "Tags")),
    h("section", {}, h("h2", {}, "Forwarded ports"), h("div", { class: "table-wrap" }, ports.el), noPorts, portForm),
    h("section", {}, h("h2", {}, "Console output"), h("div", { class: "actions" }, outputButton, outputTime), output));

  let current = null;
  let portsShown = null;

  function render(inst) {
    current = inst;
    const state = inst.state.name;
    setState(badge, state);
    setText(fields.name, nameOf(inst) || "—");
    setText(fields.reason, inst.state_reason ? `${inst.state_reason.code}: ${inst.state_reason.message}` : "—");
    setText(fields.size, `${inst.size} (${inst.vcpus} vCPU, ${mib(inst.memory_mib)}, ${inst.disk_gib} GiB disk, ${money(inst.price_per_hour, inst.currency)}/h)`);
    setText(fields.image, `${inst.image} ${inst.image_version || ""}`.trim());
    setText(fields.key, inst.key_name || "—");
    setText(fields.launched, when(inst.launch_time));
    setText(fields.uptime, uptime(inst) || "—");
    setText(ssh, (inst.ssh && inst.ssh.command) || "");
    const ready = [inst.ready.ssh && "SSH", inst.ready.container_engine && "container engine"].filter(Boolean);
    setText(fields.ready, ready.length ? ready.join(", ") : "not yet");
    const place = inst.placement || {};
    setText(fields.placement, `${place.host || ""} (${place.availability_zone || ""})${place.host_reachable === false ? ", host unreachable" : ""}`);
    setText(fields.cost, money(inst.cost_so_far, inst.currency));
    setText(fields.tags, tagsText(inst.tags) || "—");
    for (const [name, a] of Object.entries(ACTIONS)) buttons[name].disabled = !a.when.includes(state);
    portForm.hidden = state === "terminated" || state === "shutting-down";
    renderPorts(inst.ports || []);
  }

  function renderPorts(list) {
    const key = JSON.stringify(list);
    if (key === portsShown) return;
    portsShown = key;
    clear(ports.tbody);
    for (const p of list) {
      ports.tbody.append(h("tr", { "data-port": p.host_port },
        cell("Address", h("code", {}, p.address)), cell("Guest port", String(p.guest_port)),
        cell("Protocol", p.protocol),
        cell("", h("button", { type: "button", class: "small danger", onclick: () => removePort(p) }, "Remove"))));
    }
    ports.el.hidden = list.length === 0;
    noPorts.hidden = list.length > 0;
    ports.el.setAttribute("aria-label", list.map(portText).join(", "));
  }

  async function refresh() {
    render(await api("GET", base));
    pollOk();
  }

  const poller = poll(refresh, 2000, (e) => showError(e, { poll: true }));

  async function act(name) {
    const a = ACTIONS[name];
    const ok = await confirm({ title: `${a.label} ${id}?`, text: a.text, ok: a.label, danger: a.danger });
    if (!ok) return;
    clearNotice();
    try {
      if (name === "terminate") render(await api("DELETE", base));
      else render(await api("POST", `${base}/${name}`));
      showInfo(`${a.label}: ${id} is ${current.state.name}.`);
    } catch (e) {
      showError(e);
    }
    poller.now();
  }

  async function addPort(event) {
    event.preventDefault();
    clearNotice();
    const body = { guest_port: Number(guest.value) };
    if (hostPort.value) body.host_port = Number(hostPort.value);
    try {
      const p = await api("POST", `${base}/ports`, body);
      showInfo(`Forwarding ${portText(p)}.`);
      guest.value = "";
      hostPort.value = "";
    } catch (e) {
      showError(e);
    }
    poller.now();
  }

  async function removePort(p) {
    const ok = await confirm({ title: `Stop forwarding ${p.address}?`, text: `Guest port ${p.guest_port} of ${id} is no longer reachable there.`, ok: "Remove" });
    if (!ok) return;
    clearNotice();
    try {
      await api("DELETE", `${base}/ports/${encodeURIComponent(p.host_port)}`);
      showInfo(`Stopped forwarding ${p.address}.`);
    } catch (e) {
      showError(e);
    }
    poller.now();
  }

  async function loadConsole() {
    outputButton.disabled = true;
    try {
      const data = await api("GET", `${base}/console`);
      output.textContent = data.output || "(no output yet)";
      output.hidden = false;
      output.scrollTop = output.scrollHeight;
      setText(outputTime, `as of ${when(data.timestamp)}`);
      setText(outputButton, "Refresh console output");
    } catch (e) {
      showError(e);
    } finally {
      outputButton.disabled = false;
    }
  }

  return poller;
}


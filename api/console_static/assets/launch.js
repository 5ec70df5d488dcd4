// #/launch: the launch form. Sizes, images and key pairs come from the API; tags and
// forwarded ports are rows the user adds and removes.
import { api } from "./api.js";
import { h, option } from "./dom.js";
import { mib, money } from "./format.js";
import { clearNotice, showAfterNavigation, showError } from "./notice.js";

function tagRow() {
  const row = h("div", { class: "row tag-row" },
    h("input", { class: "tag-key", placeholder: "key", "aria-label": "tag key", maxlength: 128 }),
    h("span", { class: "eq" }, "="),
    h("input", { class: "tag-value", placeholder: "value", "aria-label": "tag value", maxlength: 256 }));
  row.append(h("button", { type: "button", class: "small quiet", "aria-label": "remove tag", onclick: () => row.remove() }, "✕"));
  return row;
}

function portRow() {
  const row = h("div", { class: "row port-row" },
    h("input", { class: "port-guest", type: "number", min: 1, max: 65535, placeholder: "guest port", "aria-label": "guest port", inputmode: "numeric", required: true }),
    h("span", { class: "eq" }, "from host port"),
    h("input", { class: "port-host", type: "number", min: 1024, max: 65535, placeholder: "any", "aria-label": "host port", inputmode: "numeric" }));
  row.append(h("button", { type: "button", class: "small quiet", "aria-label": "remove port", onclick: () => row.remove() }, "✕"));
  return row;
}

export function show(main) {
  const size = h("select", { id: "launch-size", name: "size", required: true });
  const image = h("select", { id: "launch-image", name: "image" }, option("", "the service's default image"));
  const key = h("select", { id: "launch-key", name: "key_name" }, option("", "none"));
  const count = h("input", { id: "launch-count", type: "number", min: 1, max: 20, value: "1", required: true, inputmode: "numeric" });
  const userData = h("textarea", { id: "launch-user-data", rows: 6, spellcheck: "false", placeholder: "#cloud-config\nruncmd:\n  - echo hello" });
  const name = h("input", { id: "launch-name", maxlength: 256, placeholder: "web-1", autocomplete: "off" });
  const tags = h("div", { id: "launch-tags", class: "rows" });
  const ports = h("div", { id: "launch-ports", class: "rows" });
  const submit = h("button", { type: "submit", class: "primary", id: "launch-submit" }, "Launch");
  const form = h("form", { id: "launch-form", class: "stack", onsubmit: launch },
    h("label", {}, "Name (the Name tag)", name),
    h("label", {}, "Size", size),
    h("label", {}, "Image", image),
    h("label", {}, "Key pair", key),
    h("label", {}, "Count", count),
    h("fieldset", {}, h("legend", {}, "Tags"), tags,
      h("button", { type: "button", class: "small", id: "add-tag", onclick: () => tags.append(tagRow()) }, "Add tag")),
    h("fieldset", {}, h("legend", {}, "Forwarded ports (TCP)"), ports,
      h("button", { type: "button", class: "small", id: "add-port", onclick: () => ports.append(portRow()) }, "Add port")),
    h("label", {}, "User data (cloud-init)", userData),
    h("div", { class: "actions" }, submit, h("a", { href: "#/instances", class: "button quiet" }, "Cancel")));
  main.append(h("h1", {}, "Launch instances"), form);

  let stopped = false;
  (async () => {
    try {
      const [sizes, images, keys] = await Promise.all(
        [api("GET", "/v1/sizes"), api("GET", "/v1/images"), api("GET", "/v1/keypairs")]);
      if (stopped) return;
      for (const s of sizes.sizes) {
        size.append(option(s.name, `${s.name}: ${s.vcpus} vCPU, ${mib(s.memory_mib)}, ${s.disk_gib} GiB, ${money(s.price_per_hour, s.currency)}/h`, s.name === "t3.micro"));
      }
      for (const i of images.images) image.append(option(i.name, `${i.name} ${i.version}`));
      for (const k of keys.key_pairs) key.append(option(k.name, k.name));
    } catch (e) {
      showError(e);
    }
  })();

  async function launch(event) {
    event.preventDefault();
    clearNotice();
    const body = { size: size.value, count: Number(count.value), tags: {}, ports: [] };
    if (name.value.trim()) body.tags.Name = name.value.trim();
    if (image.value) body.image = image.value;
    if (key.value) body.key_name = key.value;
    if (userData.value) body.user_data = userData.value;
    for (const row of tags.querySelectorAll(".tag-row")) {
      const k = row.querySelector(".tag-key").value.trim();
      const v = row.querySelector(".tag-value").value;
      if (k) body.tags[k] = v;
      else if (v) return showError({ code: "InvalidParameterValue", message: "a tag with a value needs a key" });
    }
    for (const row of ports.querySelectorAll(".port-row")) {
      const p = { guest_port: Number(row.querySelector(".port-guest").value) };
      const hostPort = row.querySelector(".port-host").value;
      if (hostPort) p.host_port = Number(hostPort);
      body.ports.push(p);
    }
    submit.disabled = true;
    try {
      const result = await api("POST", "/v1/instances", body);
      const ids = result.instances.map((i) => i.id).join(", ");
      showAfterNavigation(`Launched ${ids} (reservation ${result.reservation_id}).`);
      location.hash = "#/instances";
    } catch (e) {
      showError(e);
    } finally {
      submit.disabled = false;
    }
  }

  return { stop() { stopped = true; } };
}

// Building the page from data: every text goes in as a text node or textContent, never as
// HTML (tags, user data, console output and error messages come from others).

export const $ = (selector, root = document) => root.querySelector(selector);

// h("a", {href: "#/x", class: "y", onclick: f}, "text", child, [more]) -> the element
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") el.className = value;
    else if (name.startsWith("on") && typeof value === "function") el.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name === "value" || name === "checked" || name === "selected") el[name] = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of [children].flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

// Sets EL's text only when it changed (a poll does not disturb a selection or focus).
export function setText(el, text) {
  const value = text === null || text === undefined ? "" : String(text);
  if (el.textContent !== value) el.textContent = value;
}

export function option(value, label, selected = false) {
  return h("option", { value, selected }, label);
}

// A copy-to-clipboard button for TEXT(): the Clipboard API where the page may use it (a
// secure context: HTTPS or localhost), else a selected textarea and execCommand.
export function copyButton(text, label = "Copy") {
  const button = h("button", { type: "button", class: "small copy", title: "copy to the clipboard" }, label);
  button.addEventListener("click", async () => {
    const value = typeof text === "function" ? text() : text;
    if (!value) return;
    let done = false;
    try {
      if (navigator.clipboard && window.isSecureContext) {
        await navigator.clipboard.writeText(value);
        done = true;
      }
    } catch (e) { /* fall back below */ }
    if (!done) {
      const area = h("textarea", { class: "offscreen", readonly: true }, value);
      document.body.append(area);
      area.select();
      try { done = document.execCommand("copy"); } catch (e) { done = false; }
      area.remove();
    }
    button.textContent = done ? "Copied" : "Copy failed";
    setTimeout(() => { button.textContent = label; }, 1500);
  });
  return button;
}

// A table whose rows become cards on a narrow screen: each cell carries its column's name.
export function table(columns, { id, cards = true } = {}) {
  const tbody = h("tbody");
  const el = h("table", { id, class: cards ? "cards" : null },
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))), tbody);
  return { el, tbody, columns };
}

export function cell(label, ...children) {
  return h("td", { "data-label": label }, ...children);
}

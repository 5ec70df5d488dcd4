// How values read on the page.
import { serviceNow } from "./api.js";

export function duration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return "";
  seconds = Math.floor(seconds);
  const d = Math.floor(seconds / 86400);
  const h = Math.floor((seconds % 86400) / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  if (d) return `${d}d ${h}h ${String(m).padStart(2, "0")}m`;
  if (h) return `${h}h ${String(m).padStart(2, "0")}m`;
  if (m) return `${m}m ${String(s).padStart(2, "0")}s`;
  return `${s}s`;
}

// how long a running instance has been running (since its last state change)
export function uptime(inst) {
  if (inst.state.name !== "running" || !inst.state_changed_at) return "";
  return duration((serviceNow() - Date.parse(inst.state_changed_at)) / 1000);
}

export function money(amount, currency) {
  return amount === undefined || amount === null ? "" : `${amount} ${currency || ""}`.trim();
}

export function when(iso) {
  if (!iso) return "";
  const t = new Date(iso);
  return Number.isNaN(t.getTime()) ? String(iso) : t.toISOString().replace("T", " ").replace(/\.\d+Z$|Z$/, " UTC");
}

export function nameOf(inst) {
  return (inst.tags && inst.tags.Name) || "";
}

export function portText(p) {
  return `${p.address} → ${p.guest_port}/${p.protocol}`;
}

export function tagsText(tags) {
  return Object.entries(tags || {}).map(([k, v]) => (v ? `${k}=${v}` : k)).join(", ");
}

export function mib(n) {
  return n >= 1024 && n % 1024 === 0 ? `${n / 1024} GiB` : `${n} MiB`;
}

// YYYY-MM-DD of a Date, in UTC
export function day(date) {
  return date.toISOString().slice(0, 10);
}

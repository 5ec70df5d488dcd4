// The confirmation dialog (<dialog>): confirm({title, text, ok}) -> true if confirmed.
import { $, setText } from "./dom.js";

export function confirm({ title, text = "", ok = "Confirm", danger = true }) {
  const dialog = $("#confirm");
  setText($("#confirm-title"), title);
  setText($("#confirm-text"), text);
  const button = $("#confirm-ok");
  setText(button, ok);
  button.className = danger ? "danger" : "primary";
  dialog.returnValue = "cancel";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
    $("#confirm-cancel").focus();
  });
}

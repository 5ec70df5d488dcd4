// The console: log in, then one page with hash routes (#/instances, #/instances/ID,
// #/launch, #/billing, #/budget). Each view polls what it shows and stops when left.
import { api, onUnauthorized } from "./api.js";
import { $, clear, setText } from "./dom.js";
import { clearNotice, showError, showInfo, viewChanged } from "./notice.js";
import * as billing from "./billing.js";
import * as budget from "./budget.js";
import * as instance from "./instance.js";
import * as instances from "./instances.js";
import * as launch from "./launch.js";

let me = null; // who is logged in: GET /console/session
let view = null; // the view shown: {stop()}

function leaveView() {
  if (view && view.stop) view.stop();
  view = null;
  clear($("#main"));
}

function route() {
  if (!me) return;
  leaveView();
  viewChanged();
  const main = $("#main");
  const hash = location.hash || "#/instances";
  const detail = hash.match(/^#\/instances\/(i-[0-9a-f]{8,17})$/);
  let section = "instances";
  if (detail) view = instance.show(main, detail[1]);
  else if (hash === "#/launch") { section = "launch"; view = launch.show(main); }
  else if (hash === "#/billing") { section = "billing"; view = billing.show(main); }
  else if (hash === "#/budget") { section = "budget"; view = budget.show(main); }
  else view = instances.show(main);
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.section === section) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${section[0].toUpperCase()}${section.slice(1)} · computed console`;
}

function showApp(who) {
  me = who;
  $("#login").hidden = true;
  $("#top").hidden = false;
  $("#main").hidden = false;
  setText($("#who"), `${who.account_name}${who.admin ? " (admin)" : ""}`);
  $("#who").title = `account ${who.account_id}`;
  route();
}

function showLogin(message) {
  me = null;
  leaveView();
  clearNotice();
  $("#top").hidden = true;
  $("#main").hidden = true;
  $("#login").hidden = false;
  const error = $("#login-error");
  error.hidden = !message;
  setText(error, message || "");
  $("#login-secret").value = "";
  $("#login-key").focus();
}

async function login(event) {
  event.preventDefault();
  const button = $("#login-submit");
  button.disabled = true;
  try {
    const who = await api("POST", "/console/session", {
      access_key_id: $("#login-key").value.trim(),
      secret_access_key: $("#login-secret").value,
    });
    $("#login-secret").value = "";
    $("#login-error").hidden = true;
    if (!location.hash) history.replaceState(null, "", "#/instances");
    showApp(who);
  } catch (e) {
    $("#login-secret").value = "";
    showLogin(`${e.code}: ${e.message}`);
  } finally {
    button.disabled = false;
  }
}

async function logout() {
  try {
    await api("DELETE", "/console/session");
  } catch (e) {
    showError(e);
    return;
  }
  showLogin("");
  showInfo("Logged out.");
}

async function start() {
  $("#login-form").addEventListener("submit", login);
  $("#logout").addEventListener("click", logout);
  $("#notice-close").addEventListener("click", clearNotice);
  window.addEventListener("hashchange", route);
  onUnauthorized((e) => {
    if (me) showLogin(`Your session has ended (${e.code}: ${e.message}). Log in again.`);
  });
  try {
    showApp(await api("GET", "/console/session"));
  } catch (e) {
    showLogin(e.status === 401 ? "" : `${e.code}: ${e.message}`);
  }
}

start();

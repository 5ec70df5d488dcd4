// The banner at the top: an API error as "CODE: message", or a short piece of news.
import { $, setText } from "./dom.js";

let fromPoll = false;

export function showError(error, { poll = false } = {}) {
  const text = error && error.code ? `${error.code}: ${error.message}` : `Error: ${error && error.message || error}`;
  show(text, "error");
  fromPoll = poll;
}

export function showInfo(text) {
  show(text, "info");
  fromPoll = false;
}

// A poll that works again clears the error an earlier poll showed (not a user's).
export function pollOk() {
  if (fromPoll) clearNotice();
}

export function clearNotice() {
  $("#notice").hidden = true;
  fromPoll = false;
}

function show(text, kind) {
  const box = $("#notice");
  box.className = `notice ${kind}`;
  box.dataset.kind = kind;
  setText($("#notice-text"), text);
  box.hidden = false;
}

let afterNavigation = null;

// News to show once the view a navigation leads to is shown ("Launched i-...").
export function showAfterNavigation(text) {
  afterNavigation = text;
}

// A new view: the old one's notice goes, news for the new one shows.
export function viewChanged() {
  clearNotice();
  if (afterNavigation) showInfo(afterNavigation);
  afterNavigation = null;
}

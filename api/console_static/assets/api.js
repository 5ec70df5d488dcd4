// The REST API, called with the session cookie and the console's header (which a request
// that changes something must carry). Every error is an ApiError with the API's code and
// message; a 401 ends the session in the page (onUnauthorized).

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const listeners = [];
let skew = 0; // the service's clock minus this browser's, in ms (from the Date header)

export function onUnauthorized(listener) {
  listeners.push(listener);
}

// now on the service's clock, for uptimes
export function serviceNow() {
  return Date.now() + skew;
}

export async function request(method, path, { body, accept = "application/json" } = {}) {
  const headers = { "X-Computed-Console": "1", Accept: accept };
  const init = { method, headers, credentials: "same-origin", cache: "no-store", redirect: "error" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, "NetworkError", `the service did not answer (${e.message})`);
  }
  const date = Date.parse(response.headers.get("Date") || "");
  if (!Number.isNaN(date)) skew = date - Date.now();
  if (!response.ok) {
    let error = {};
    try {
      error = (await response.json()).error || {};
    } catch (e) { /* not JSON */ }
    const failure = new ApiError(response.status, String(error.code || `HTTP${response.status}`),
      String(error.message || response.statusText || "the request failed"));
    if (response.status === 401 && path !== "/console/session") listeners.forEach((l) => l(failure));
    throw failure;
  }
  return response;
}

export async function api(method, path, body) {
  const response = await request(method, path, { body });
  if (response.status === 204) return null;
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

// path with ?k=v&... (arrays repeat the key)
export function withQuery(path, params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value === undefined || value === null || value === "") continue;
    for (const v of [value].flat()) query.append(key, v);
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

// A loop calling FN now and INTERVAL ms after each call ends, until stop(); now() runs it
// at once (after the call under way, if any). A failure goes to ONERROR.
export function poll(fn, interval, onError) {
  let stopped = false;
  let running = false;
  let again = false;
  let timer = null;
  const run = async () => {
    if (stopped) return;
    if (running) {
      again = true;
      return;
    }
    running = true;
    clearTimeout(timer);
    try {
      await fn();
    } catch (e) {
      if (!stopped && onError) onError(e);
    }
    running = false;
    if (stopped) return;
    if (again) {
      again = false;
      run();
    } else {
      timer = setTimeout(run, interval);
    }
  };
  run();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
    now: run,
  };
}

// What every console page shares: API requests and sockets (with the API key, when the
// server asks for one), element building, formatting, the server's clock and zone, and
// reconnection back-off. No framework, no build step.

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.name = "ApiError";
    this.status = status;
  }
}

// -- the API key ------------------------------------------------------------------------------
//
// A server with [auth] api_keys answers 401 to any request without one. The first 401 opens a
// small form; the key entered is kept in sessionStorage (this tab only, gone when it closes)
// and sent as "Authorization: Bearer KEY" on every request, and as the first message of every
// WebSocket (a browser cannot set headers on those). A key the server refuses is forgotten
// and the form opens again, saying so. Every request waiting for a key waits for the same form.

const KEY_ITEM = "framebroker.api_key";
let storageWorks = true;
let keptKey = null; // the key, when sessionStorage cannot be used (storage disabled)
let keyPrompt = null; // the open form's promise of a key

/** The key this tab holds, or null. */
export function apiKey() {
  if (storageWorks) {
    try {
      return window.sessionStorage.getItem(KEY_ITEM);
    } catch {
      storageWorks = false;
    }
  }
  return keptKey;
}

function storeKey(key) {
  keptKey = key;
  if (!storageWorks) return;
  try {
    if (key === null) window.sessionStorage.removeItem(KEY_ITEM);
    else window.sessionStorage.setItem(KEY_ITEM, key);
  } catch {
    storageWorks = false; // keptKey serves for this page
  }
}

let keyForm = null;

function buildKeyForm() {
  const input = el("input", {
    id: "api-key",
    name: "api-key",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
  });
  const problem = el("p", { class: "key-problem", id: "api-key-problem", role: "alert" });
  const form = el(
    "form",
    { method: "dialog" },
    el("h2", { id: "api-key-title", text: "API key needed" }),
    el("p", {
      text:
        "This server asks for an API key. The console keeps it in this browser tab only " +
        "and sends it with each request.",
    }),
    problem,
    el("label", { for: "api-key", text: "API key" }),
    input,
    el(
      "div",
      { class: "dialog-actions" },
      el("button", { type: "submit", class: "primary", text: "Use key" }),
    ),
  );
  const dialog = el("dialog", { class: "key-dialog", "aria-labelledby": "api-key-title" }, form);
  // The page cannot work without a key: Escape does not close the form.
  dialog.addEventListener("cancel", (event) => event.preventDefault());
  document.body.append(dialog);
  return { dialog, form, input, problem };
}

function showProblem(text) {
  keyForm.problem.textContent = text;
  keyForm.problem.hidden = !text;
  keyForm.input.setAttribute("aria-invalid", text ? "true" : "false");
}

/**
 * Ask for a key (`refused`: the server turned the last one down) and resolve with it once
 * entered. Callers asking while the form is open share it.
 */
function askForKey(refused) {
  if (keyForm === null) keyForm = buildKeyForm();
  if (refused) showProblem("The server refused that key. Check it and enter it again.");
  if (keyPrompt !== null) return keyPrompt;
  if (!refused) showProblem("");
  const { dialog, form, input } = keyForm;
  keyPrompt = new Promise((resolve, reject) => {
    const onSubmit = (event) => {
      event.preventDefault();
      const key = input.value.trim();
      if (!key) {
        showProblem("Enter the key (it may not be blank).");
        return;
      }
      storeKey(key);
      finish();
      dialog.close();
      resolve(key);
    };
    const onClose = () => {
      finish();
      reject(new ApiError("an API key is needed to use this server", 401));
    };
    const finish = () => {
      form.removeEventListener("submit", onSubmit);
      dialog.removeEventListener("close", onClose);
      keyPrompt = null;
      input.value = "";
    };
    form.addEventListener("submit", onSubmit);
    dialog.addEventListener("close", onClose);
  });
  dialog.showModal();
  input.focus();
  return keyPrompt;
}

/** Whether the key form is open: requests and sockets wait for it. */
export function waitingForKey() {
  return keyPrompt !== null;
}

/** The server said `sent` is no good (null: none was sent): ask for another. */
function keyRefused(sent) {
  if (apiKey() !== sent) return keyPrompt ?? Promise.resolve(apiKey()); // replaced already
  if (sent !== null) storeKey(null);
  return askForKey(sent !== null);
}

/**
 * fetch() with the API key; on a 401 it asks for a key (or another one) and tries again.
 * `timeoutMs` bounds each try, not the time someone takes to type a key.
 */
export async function apiFetch(path, { method = "GET", headers = {}, timeoutMs = 10000 } = {}) {
  for (;;) {
    if (keyPrompt !== null) await keyPrompt;
    const key = apiKey();
    const response = await fetch(path, {
      method,
      headers: key === null ? headers : { ...headers, Authorization: `Bearer ${key}` },
      signal: AbortSignal.timeout(timeoutMs),
    });
    if (response.status !== 401) return response;
    response.body?.cancel().catch(() => {});
    await keyRefused(key);
  }
}

const UNAUTHORIZED = '"unauthorized"';

function isRefusal(data) {
  // The server's refusal: {"error": ..., "code": "unauthorized"}; checked cheaply first, since
  // every frame of the live stream comes through here too.
  if (typeof data !== "string" || !data.startsWith('{"error"') || !data.includes(UNAUTHORIZED)) {
    return false;
  }
  try {
    return JSON.parse(data).code === "unauthorized";
  } catch {
    return false;
  }
}

/**
 * Open a WebSocket to `path` and, when this tab holds a key, send it as the first message.
 * Resolves with the socket once it is open and the key accepted; rejects with ApiError (401)
 * when the key is refused (the form then asks for another) or Error when the socket cannot
 * open in `timeoutMs`. A refusal later on (the server closing the socket over its key) asks
 * for another key too; the page sees the socket close and reconnects as after any drop.
 */
export async function openSocket(path, params = {}, { timeoutMs = 10000 } = {}) {
  if (keyPrompt !== null) await keyPrompt;
  const key = apiKey();
  const ws = new WebSocket(wsURL(path, params));
  ws.addEventListener("message", (event) => {
    if (isRefusal(event.data)) keyRefused(key).catch(() => {});
  });
  await new Promise((resolve, reject) => {
    const timer = window.setTimeout(() => fail(new Error("the server did not answer in time")), timeoutMs);
    const done = () => {
      window.clearTimeout(timer);
      ws.removeEventListener("open", onOpen);
      ws.removeEventListener("message", onFirst);
      ws.removeEventListener("close", onClose);
    };
    const fail = (error) => {
      done();
      if (ws.readyState <= WebSocket.OPEN) ws.close();
      reject(error);
    };
    const onOpen = () => {
      if (key === null) {
        done();
        resolve();
      } else {
        ws.send(JSON.stringify({ type: "auth", api_key: key }));
      }
    };
    const onFirst = (event) => {
      if (isRefusal(event.data)) {
        fail(new ApiError("the server refused the API key", 401));
        return;
      }
      // {"type": "auth", "ok": true}, or (a server that checks no keys) its answer to an
      // unknown message: either way the socket is ready, and the page never sees this one.
      done();
      resolve();
    };
    const onClose = () => fail(new Error("the socket closed before it opened"));
    ws.addEventListener("open", onOpen);
    ws.addEventListener("message", onFirst);
    ws.addEventListener("close", onClose);
  });
  return ws;
}

/**
 * Show the image at API path `url` in `img`. With a key it cannot be a plain `src` (an <img>
 * sends no headers): it is fetched with the key and shown as a data: URL, which holds no
 * object URL to revoke. An answer that comes after `img` was given another image is dropped.
 */
export function showImage(img, url) {
  if (apiKey() === null) {
    delete img.dataset.wanted;
    img.src = url;
    return;
  }
  img.dataset.wanted = url;
  img.loading = "eager";
  apiFetch(url, { headers: { Accept: "image/*" } })
    .then((response) => {
      if (!response.ok) throw new ApiError(`${response.status} ${response.statusText}`, response.status);
      return response.blob();
    })
    .then(
      (blob) =>
        new Promise((resolve, reject) => {
          const reader = new FileReader();
          reader.onload = () => resolve(reader.result);
          reader.onerror = () => reject(reader.error);
          reader.readAsDataURL(blob);
        }),
    )
    .then((dataURL) => {
      if (img.dataset.wanted === url) img.src = dataURL;
    })
    .catch((err) => console.warn(`image ${url}:`, err.message));
}

// -- requests ---------------------------------------------------------------------------------

/** GET (or another method) a JSON endpoint; throws ApiError with the server's message. */
export async function requestJSON(path, { method = "GET", timeoutMs = 10000 } = {}) {
  const response = await apiFetch(path, {
    method,
    headers: { Accept: "application/json" },
    timeoutMs,
  });
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const message = body && body.error ? body.error : `${response.status} ${response.statusText}`;
    throw new ApiError(message, response.status);
  }
  return body;
}

let info = null;

/**
 * What /v1/console says about this server (asked once per page), plus `clockOffset`: seconds
 * to add to the browser's clock to get the server's.
 */
export function serverInfo() {
  if (info === null) {
    const asked = Date.now() / 1000;
    info = requestJSON("/v1/console").then((body) => {
      const answered = Date.now() / 1000;
      // A key kept from an earlier server in this tab: this one checks none, so send none.
      if (body.api_keys === false) storeKey(null);
      return { ...body, clockOffset: body.server_time - (asked + answered) / 2 };
    });
    info.catch(() => {
      info = null; // ask again next time
    });
  }
  return info;
}

/** Build an element: el("td", {class: "num", dataset: {label: "FPS"}}, "12.5"). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

/** Set text only when it changed (no needless layout, no lost selection). */
export function setText(node, text) {
  const value = String(text);
  if (node.textContent !== value) node.textContent = value;
}

/** Show a connection or request state: state is "ok", "wait" or "bad". */
export function setStatus(node, state, text) {
  node.dataset.state = state;
  setText(node, text);
}

export function wsURL(path, params = {}) {
  const url = new URL(path, window.location.href);
  url.protocol = window.location.protocol === "https:" ? "wss:" : "ws:";
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, value);
  }
  return url.toString();
}

export function formatInt(n) {
  return Number.isFinite(n) ? Math.round(n).toLocaleString("en-US") : "–";
}

export function formatMs(ms) {
  if (!Number.isFinite(ms)) return "–";
  return ms < 10 ? `${ms.toFixed(2)} ms` : ms < 100 ? `${ms.toFixed(1)} ms` : `${Math.round(ms)} ms`;
}

export function formatDuration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return "–";
  const s = Math.floor(seconds);
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = s % 60;
  if (d) return `${d}d ${h}h ${m}m`;
  if (h) return `${h}h ${m}m ${rest}s`;
  if (m) return `${m}m ${rest}s`;
  return `${rest}s`;
}

/** Seconds since local midnight in `timeZone` at epoch second `t`. */
export function secondsOfDay(t, timeZone) {
  const parts = new Intl.DateTimeFormat("en-GB", {
    timeZone,
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
    hourCycle: "h23",
  }).formatToParts(new Date(t * 1000));
  const get = (type) => Number(parts.find((p) => p.type === type)?.value ?? 0);
  return get("hour") * 3600 + get("minute") * 60 + get("second");
}

/** "HH:MM:SS" as seconds since midnight, or NaN. */
export function parseClock(text) {
  const m = /^(\d{1,2}):(\d{2}):(\d{2})$/.exec(text || "");
  return m ? Number(m[1]) * 3600 + Number(m[2]) * 60 + Number(m[3]) : Number.NaN;
}

/** Exponential back-off with jitter: 0.5 s, 1 s, 2 s ... up to 15 s. */
export class Backoff {
  constructor(firstMs = 500, maxMs = 15000) {
    this.firstMs = firstMs;
    this.maxMs = maxMs;
    this.attempt = 0;
  }

  next() {
    const base = Math.min(this.maxMs, this.firstMs * 2 ** this.attempt);
    this.attempt += 1;
    return Math.round(base * (0.75 + Math.random() * 0.5));
  }

  reset() {
    this.attempt = 0;
  }
}

/**
 * Run `task` now and then every `intervalMs` after it settles, skipping while the page is
 * hidden; returns a function that stops it.
 */
export function poll(task, intervalMs) {
  let timer = 0;
  let stopped = false;
  const run = async () => {
    if (stopped) return;
    if (!document.hidden) {
      try {
        await task();
      } catch (err) {
        console.warn("poll failed:", err);
      }
    }
    if (!stopped) timer = window.setTimeout(run, intervalMs);
  };
  const onVisible = () => {
    if (!document.hidden && !stopped) {
      window.clearTimeout(timer);
      run();
    }
  };
  document.addEventListener("visibilitychange", onVisible);
  run();
  return () => {
    stopped = true;
    window.clearTimeout(timer);
    document.removeEventListener("visibilitychange", onVisible);
  };
}

/** Cut `text` to `max` characters, saying so. */
export function truncate(text, max) {
  return text.length <= max ? text : `${text.slice(0, max)}\n… (${text.length - max} more characters)`;
}

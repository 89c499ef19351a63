// What every console page shares: JSON requests, element building, formatting, the
// server's clock and zone, and reconnection back-off. No framework, no build step.

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.name = "ApiError";
    this.status = status;
  }
}

/** GET (or another method) a JSON endpoint; throws ApiError with the server's message. */
export async function requestJSON(path, { method = "GET", timeoutMs = 10000 } = {}) {
  const response = await fetch(path, {
    method,
    headers: { Accept: "application/json" },
    signal: AbortSignal.timeout(timeoutMs),
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

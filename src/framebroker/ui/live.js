// Live: a source's annotated frames, counts and events from the live people counter WebSocket
// (/ws/live?source=NAME), plus today's events and counts per hour from the store.
import { hourlyChart, timelineChart } from "./chart.js";
import {
  Backoff,
  el,
  formatInt,
  openSocket,
  parseClock,
  poll,
  requestJSON,
  secondsOfDay,
  serverInfo,
  setStatus,
  setText,
  waitingForKey,
} from "./common.js";

const MAX_EVENTS_LISTED = 100;
const SILENCE_MS = 10000; // stats come twice a second: this long without a message is a dead link
const HOURLY_EVERY_MS = 15000;
const SOURCE_EVERY_MS = 2000;
const EVENTS_EVERY_MS = 30000;

const $ = (id) => document.getElementById(id);
const select = $("source");
const status = $("status");
const img = $("frame");
const placeholder = $("placeholder");
const banner = $("banner");
const counts = {
  count_in: $("count-in"),
  count_out: $("count-out"),
  face_count: $("face-count"),
  daily_event_count: $("event-count"),
};

let info = null;
let source = "";
let socket = null;
let connecting = 0; // counts connect() calls: an older one that finishes late gives up
let reconnectTimer = 0;
let lastMessageAt = 0;
let sourceState = null; // the source's state from /v1/sources, once known
const backoff = new Backoff();
const startButton = $("source-start");

// -- frames: only the newest is decoded, at most once per animation frame ------------------

let pendingFrame = null;
let paintScheduled = false;
let framesThisSecond = 0;
let rateStarted = performance.now();

function paint() {
  paintScheduled = false;
  if (pendingFrame === null) return;
  // A data: URL holds no object URL, so nothing is left to revoke and memory stays flat.
  img.src = `data:image/jpeg;base64,${pendingFrame.data}`;
  pendingFrame = null;
  if (img.hidden) {
    img.hidden = false;
    placeholder.hidden = true;
  }
}

function onFrame(message) {
  pendingFrame = message;
  setText($("frame-time"), message.timestamp ?? "");
  framesThisSecond += 1;
  const now = performance.now();
  if (now - rateStarted >= 1000) {
    setText($("frame-rate"), `${((1000 * framesThisSecond) / (now - rateStarted)).toFixed(1)} fps`);
    framesThisSecond = 0;
    rateStarted = now;
  }
  if (!paintScheduled) {
    paintScheduled = true;
    requestAnimationFrame(paint);
  }
}

// -- stats and events ------------------------------------------------------------------------

let lastTotal = null;
let eventStart = null;

function bump(node) {
  node.classList.remove("bump");
  void node.offsetWidth; // restart the animation
  node.classList.add("bump");
}

function onStats(data) {
  for (const [key, node] of Object.entries(counts)) {
    const text = formatInt(data[key]);
    if (node.textContent !== text) {
      if (node.textContent !== "–") bump(node);
      node.textContent = text;
    }
  }
  const total = (data.count_in ?? 0) + (data.count_out ?? 0);
  if (lastTotal !== null && total !== lastTotal) requestHourly();
  lastTotal = total;
  if (data.event_active) {
    const since = eventStart ? ` since ${eventStart}` : "";
    const text = `Traffic event in progress${since}: ${formatInt(data.current_event_count_in)} in so far`;
    banner.dataset.active = "true";
    setText(banner, text);
  } else if (banner.dataset.active === "true") {
    banner.dataset.active = "false";
    setText(banner, "No traffic event.");
  }
}

function onEvent(data) {
  if (data.status === "started") eventStart = data.start_time ?? null;
  else if (data.status === "ended") eventStart = null;
  refreshEvents();
}

function onMessage(raw) {
  let message;
  try {
    message = JSON.parse(raw);
  } catch {
    return;
  }
  if (message.type === "frame") onFrame(message);
  else if (message.type === "stats") onStats(message.data ?? {});
  else if (message.type === "event") onEvent(message.data ?? {});
  else if (message.error) console.warn("live server:", message.error);
}

// -- the WebSocket, reconnecting with back-off -----------------------------------------------

function reconnectLater(why) {
  const delay = backoff.next();
  setStatus(status, "bad", `${why}; reconnecting in ${(delay / 1000).toFixed(1)} s`);
  reconnectTimer = window.setTimeout(connect, delay);
}

async function connect() {
  window.clearTimeout(reconnectTimer);
  const mine = ++connecting;
  setStatus(status, "wait", waitingForKey() ? "Waiting for an API key…" : "Connecting…");
  let ws;
  try {
    ws = await openSocket(info.live_ws, { source });
  } catch (err) {
    if (mine === connecting) reconnectLater(`Cannot connect (${err.message})`);
    return;
  }
  if (mine !== connecting) {
    ws.close(); // another source was chosen meanwhile
    return;
  }
  socket = ws;
  lastMessageAt = Date.now();
  showConnected();
  ws.onmessage = (event) => {
    if (ws !== socket) return;
    lastMessageAt = Date.now();
    backoff.reset();
    onMessage(event.data);
  };
  ws.onclose = () => {
    if (ws !== socket) return;
    socket = null;
    reconnectLater("Disconnected");
  };
}

// -- the source's own state: a stopped source says so, and can be started again ------------

const REASONS = {
  stopped: "it was stopped",
  session_ended: "its session was ended",
  finished: "the video came to its end",
};

function showConnected() {
  if (!socket) return;
  if (sourceState && (sourceState.state === "standby" || sourceState.state === "starting")) {
    // In a cluster: another node runs it (its frames come here all the same), or this one
    // is taking it over.
    const where = sourceState.node ? ` on node ${sourceState.node}` : "";
    const what = sourceState.state === "standby" ? `runs${where}` : `is starting${where}`;
    setStatus(status, "ok", `Connected to ${source} (it ${what})`);
    startButton.hidden = true;
  } else if (sourceState && sourceState.state !== "running") {
    const why = REASONS[sourceState.reason] || sourceState.reason || sourceState.state;
    setStatus(status, "bad", `Source ${source} is ${sourceState.state}: ${why}`);
    startButton.hidden = false;
  } else {
    setStatus(status, "ok", source ? `Connected to ${source}` : "Connected");
    startButton.hidden = true;
  }
}

async function refreshSource() {
  if (!source) return;
  const asked = source;
  // The list, not /v1/sources/NAME: a source published onto the bus by another producer is
  // not one of ours, and its 404 would be an error in the browser's console on every poll.
  const body = await requestJSON("/v1/sources");
  if (asked !== source) return;
  sourceState = body.sources.find((s) => s.name === asked) || null;
  showConnected();
}

startButton.addEventListener("click", async () => {
  startButton.disabled = true;
  try {
    sourceState = await requestJSON(`/v1/sources/${encodeURIComponent(source)}/start`, {
      method: "POST",
      timeoutMs: 30000,
    });
    showConnected();
  } catch (err) {
    setStatus(status, "bad", `Cannot start ${source}: ${err.message}`);
  } finally {
    startButton.disabled = false;
  }
});

function watchdog() {
  if (socket && socket.readyState === WebSocket.OPEN && Date.now() - lastMessageAt > SILENCE_MS) {
    socket.close(); // onclose reconnects
  }
}

// -- store: counts per hour and today's events -------------------------------------------------

let hourlyTimer = 0;
let hourlyAt = 0;

async function refreshHourly() {
  hourlyAt = Date.now();
  if (!source) {
    hourlyChart($("hourly"), []);
    return;
  }
  const body = await requestJSON(`/v1/sources/${encodeURIComponent(source)}/counts/hourly`);
  hourlyChart($("hourly"), body.hours);
}

/** Redraw soon after the counts change (the store is written about once a second). */
function requestHourly() {
  if (hourlyTimer) return;
  const wait = Math.max(1500, 5000 - (Date.now() - hourlyAt));
  hourlyTimer = window.setTimeout(() => {
    hourlyTimer = 0;
    refreshHourly().catch((err) => console.warn("counts per hour:", err));
  }, wait);
}

async function refreshEvents() {
  const list = $("events");
  const now = secondsOfDay(Date.now() / 1000 + info.clockOffset, info.timezone);
  if (!source) {
    timelineChart($("timeline"), [], now);
    list.replaceChildren(el("li", { text: "No video source." }));
    return;
  }
  const body = await requestJSON(`/v1/sources/${encodeURIComponent(source)}/events`);
  const events = body.events.map((ev) => {
    const running = ev.end_time === null;
    const start = parseClock(ev.start_time);
    const end = running ? now : parseClock(ev.end_time);
    const span = `${ev.start_time} – ${running ? "now" : ev.end_time}`;
    // A null count: a server that died during the event, so nobody knows how many came in.
    const count = ev.count_in === null ? "count unknown" : `${formatInt(ev.count_in)} in`;
    const label = running ? `${span}, in progress` : `${span}, ${count}`;
    return { start, end, running, label };
  });
  timelineChart($("timeline"), events, now);
  const shown = events.slice(-MAX_EVENTS_LISTED).reverse();
  list.replaceChildren(
    ...(shown.length
      ? shown.map((ev) => el("li", { text: ev.label }))
      : [el("li", { text: "No traffic events today." })]),
  );
}

// -- start -----------------------------------------------------------------------------------

function chooseSource(name) {
  source = name;
  const url = new URL(window.location.href);
  if (name) url.searchParams.set("source", name);
  else url.searchParams.delete("source");
  window.history.replaceState(null, "", url);
  for (const node of Object.values(counts)) node.textContent = "–";
  lastTotal = null;
  eventStart = null;
  sourceState = null;
  startButton.hidden = true;
  banner.dataset.active = "false";
  setText(banner, "No traffic event.");
  img.hidden = true;
  placeholder.hidden = false;
  pendingFrame = null;
  if (socket) {
    const old = socket;
    socket = null;
    old.close();
  }
  backoff.reset();
  connect();
  refreshHourly().catch((err) => console.warn("counts per hour:", err));
  refreshEvents().catch((err) => console.warn("events:", err));
}

async function start() {
  const retry = new Backoff();
  while (info === null) {
    try {
      info = await serverInfo();
    } catch (err) {
      const delay = retry.next();
      setStatus(status, "bad", `Cannot reach the server (${err.message}); retrying`);
      await new Promise((resolve) => window.setTimeout(resolve, delay));
    }
  }
  const wanted = new URLSearchParams(window.location.search).get("source");
  const names = [...info.sources];
  if (wanted && !names.includes(wanted)) names.unshift(wanted); // one added since start-up
  if (!names.length) {
    select.replaceChildren(el("option", { value: "", text: "none" }));
    setText(placeholder, "No video source: run framebroker demo, or serve --source NAME=URI.");
    setStatus(status, "bad", "No source to show");
    refreshHourly().catch((err) => console.warn("counts per hour:", err));
    refreshEvents().catch((err) => console.warn("events:", err));
    return;
  }
  select.replaceChildren(...names.map((name) => el("option", { value: name, text: name })));
  const initial = wanted || names[0];
  select.value = initial;
  select.disabled = false;
  select.addEventListener("change", () => chooseSource(select.value));
  chooseSource(initial);
  window.setInterval(watchdog, 2000);
  poll(refreshSource, SOURCE_EVERY_MS);
  let firstHourly = true;
  poll(async () => {
    if (firstHourly) firstHourly = false; // chooseSource just drew it
    else await refreshHourly();
  }, HOURLY_EVERY_MS);
  let firstEvents = true;
  poll(async () => {
    if (firstEvents) firstEvents = false;
    else await refreshEvents();
  }, EVENTS_EVERY_MS);
}

start();

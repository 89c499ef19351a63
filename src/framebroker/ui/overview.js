// Overview: every live session (GET /v1/sessions each second); end one (DELETE).
import {
  el,
  formatDuration,
  formatInt,
  formatMs,
  poll,
  requestJSON,
  serverInfo,
  setStatus,
  setText,
} from "./common.js";

const MAX_ROWS = 500; // the server's session cap is lower; the page stays bounded anyway
const ARM_MS = 4000;

const tbody = document.getElementById("rows");
const empty = document.getElementById("empty");
const status = document.getElementById("status");
const notice = document.getElementById("notice");

/** id -> {tr, cells, lastFrames, lastTime} */
const rows = new Map();

function cell(label, className) {
  return el("td", { class: className, dataset: { label } });
}

function makeRow(session) {
  const cells = {
    id: cell("Session"),
    transport: cell("Transport"),
    pipeline: cell("Pipeline"),
    framesIn: cell("Frames in", "num"),
    dropped: cell("Dropped", "num"),
    fps: cell("FPS", "num"),
    latency: cell("Latency"),
    uptime: cell("Uptime", "num"),
    actions: cell("Actions"),
  };
  cells.id.append(el("code", { text: session.id }));
  // In a cluster, the node that runs the session (the listing spans every node).
  if (session.node) cells.id.append(" ", el("span", { class: "pill", text: `on ${session.node}` }));
  cells.transport.append(el("span", { class: "pill", text: session.transport ?? "–" }));
  cells.latency.append(el("ul", { class: "latency" }));
  const button = el("button", {
    type: "button",
    class: "danger",
    text: "End",
    "aria-label": `End session ${session.id}`,
    onclick: () => endClicked(session.id, button),
  });
  cells.actions.append(button);
  const tr = el("tr", { dataset: { session: session.id } }, ...Object.values(cells));
  return { tr, cells, button, lastFrames: null, lastTime: null };
}

function updateLatency(list, latency) {
  const entries = Object.entries(latency ?? {});
  if (list.children.length !== entries.length) {
    list.replaceChildren(
      ...entries.map(() => el("li", {}, el("span", { class: "name" }), " ", el("span", { class: "ms" }))),
    );
  }
  entries.forEach(([name, ms], i) => {
    const [nameNode, msNode] = list.children[i].querySelectorAll("span");
    setText(nameNode, name);
    setText(msNode, formatMs(ms));
  });
}

function updateRow(row, session, now) {
  const stats = session.stats ?? {};
  const { cells } = row;
  setText(cells.pipeline, (session.pipeline ?? []).join(" → ") || "–");
  setText(cells.framesIn, formatInt(stats.frames_in));
  setText(cells.dropped, formatInt(stats.frames_dropped));
  const processed = stats.frames_processed ?? 0;
  const uptime = session.created_at ? now - session.created_at : Number.NaN;
  let fps = Number.NaN;
  if (row.lastFrames !== null && now > row.lastTime) {
    fps = (processed - row.lastFrames) / (now - row.lastTime);
  } else if (uptime > 0) {
    fps = processed / uptime; // first look: the average so far
  }
  row.lastFrames = processed;
  row.lastTime = now;
  setText(cells.fps, Number.isFinite(fps) ? fps.toFixed(1) : "–");
  updateLatency(cells.latency.firstElementChild, stats.mean_latency_ms);
  setText(cells.uptime, formatDuration(uptime));
}

async function refresh() {
  let offset = 0;
  try {
    offset = (await serverInfo()).clockOffset;
  } catch {
    offset = 0;
  }
  let body;
  try {
    body = await requestJSON("/v1/sessions");
  } catch (err) {
    setStatus(status, "bad", `Cannot reach the server: ${err.message}`);
    return;
  }
  const now = Date.now() / 1000 + offset;
  const sessions = (body.sessions ?? []).slice(0, MAX_ROWS);
  const seen = new Set();
  sessions.forEach((session, index) => {
    seen.add(session.id);
    let row = rows.get(session.id);
    if (!row) {
      row = makeRow(session);
      rows.set(session.id, row);
    }
    updateRow(row, session, now);
    if (tbody.children[index] !== row.tr) tbody.insertBefore(row.tr, tbody.children[index] ?? null);
  });
  for (const [id, row] of rows) {
    if (!seen.has(id)) {
      row.tr.remove();
      rows.delete(id);
    }
  }
  empty.hidden = sessions.length > 0;
  const time = new Date().toLocaleTimeString("en-GB");
  const n = sessions.length;
  setStatus(status, "ok", `${n} live session${n === 1 ? "" : "s"} · updated ${time}`);
}

async function endClicked(id, button) {
  // Two presses: the first arms the button, the second (within ARM_MS) ends the session.
  if (button.dataset.armed !== "true") {
    button.dataset.armed = "true";
    button.textContent = "Confirm end";
    window.setTimeout(() => {
      if (button.isConnected && button.dataset.armed === "true") {
        button.dataset.armed = "false";
        button.textContent = "End";
      }
    }, ARM_MS);
    return;
  }
  button.disabled = true;
  button.textContent = "Ending…";
  try {
    const ended = await requestJSON(`/v1/sessions/${encodeURIComponent(id)}`, {
      method: "DELETE",
      timeoutMs: 30000,
    });
    const frames = ended.stats?.frames_processed ?? 0;
    setText(notice, `Ended session ${id} after ${formatInt(frames)} frames.`);
    rows.get(id)?.tr.remove();
    rows.delete(id);
  } catch (err) {
    setText(notice, `Could not end session ${id}: ${err.message}`);
    button.disabled = false;
    button.dataset.armed = "false";
    button.textContent = "End";
  }
}

poll(refresh, 1000);

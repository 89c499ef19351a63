// Camera: send this browser's camera over WebRTC with the WebRTC model broker signaling socket
// (/webrtc/ws: ice-servers, offer → answer, prediction..., end → result, error) and show
// the predictions as they come, heart rate as a number and a chart, then the final result.
// openSocket presents the API key first when the server wants one.
import { lineChart } from "./chart.js";
import { el, formatInt, openSocket, serverInfo, setStatus, setText, truncate } from "./common.js";

const HEART_POINTS = 60; // about a minute of once-a-second estimates
const GATHER_MS = 3000;
const RESULT_WAIT_MS = 20000;
const ICE_WAIT_MS = 3000;
const MAX_JSON_CHARS = 6000;

const $ = (id) => document.getElementById(id);
const startButton = $("start");
const stopButton = $("stop");
const status = $("status");
const video = $("video");
const placeholder = $("placeholder");

let info = null;
/** The connection in progress: {ws, pc, stream, sessionId, predictions, stopping, ...}. */
let run = null;

// -- predictions, drawn once per animation frame ------------------------------------------------

let latest = null;
let paintScheduled = false;
const heartValues = [];
let heartKey = "";

function drawHeart() {
  lineChart($("heart-chart"), heartValues, {
    min: 50,
    max: 110,
    capacity: HEART_POINTS,
    label: heartValues.length
      ? `Heart rate over the last ${heartValues.length} estimates`
      : "Heart rate: no estimates yet",
  });
}

function onHeartRate(hr) {
  const key = JSON.stringify(hr);
  if (key === heartKey) return; // the same estimate merged into another model's prediction
  heartKey = key;
  const bpm = Number.isFinite(hr.heart_rate_bpm) ? hr.heart_rate_bpm : null;
  if (hr.face === false) {
    setText($("heart-status"), "No face in view.");
  } else if (bpm === null) {
    const quality = Number.isFinite(hr.quality) ? ` (quality ${hr.quality.toFixed(2)})` : "";
    setText($("heart-status"), `Signal too weak for a reading${quality}; hold still, in good light.`);
  } else {
    setText($("heart-status"), `Quality ${hr.quality.toFixed(2)}`);
  }
  setText($("bpm"), bpm === null ? "–" : Math.round(bpm));
  heartValues.push(bpm);
  if (heartValues.length > HEART_POINTS) heartValues.shift();
  drawHeart();
}

function paintPrediction() {
  paintScheduled = false;
  const message = latest;
  if (message === null || run === null) return;
  latest = null;
  const data = message.data ?? {};
  if (data.heart_rate && typeof data.heart_rate === "object") onHeartRate(data.heart_rate);
  const parts = [
    `${formatInt(run.predictions)} received`,
    `last from ${message.model}`,
    `frame ${message.frame}`,
    `${Number(message.latency_ms).toFixed(0)} ms after arrival`,
  ];
  if (Object.keys(data).length === 0) parts.push("no output yet");
  if (message.error) parts.push(`error: ${message.error.error ?? JSON.stringify(message.error)}`);
  if (message.disabled?.length) parts.push(`switched off: ${message.disabled.join(", ")}`);
  setText($("prediction-meta"), parts.join(" · "));
  setText($("prediction"), truncate(JSON.stringify(data, null, 2), MAX_JSON_CHARS));
}

function onPrediction(message) {
  run.predictions += 1;
  latest = message;
  if (!paintScheduled) {
    paintScheduled = true;
    requestAnimationFrame(paintPrediction);
  }
}

// -- the final result ------------------------------------------------------------------------

function showResult(message) {
  const data = message.data ?? {};
  const hr = data.heart_rate;
  const frames = message.stats?.frames_in;
  let summary = `Session ${message.session_id ?? "–"} ended (${message.reason ?? "ended"})`;
  if (Number.isFinite(frames)) summary += ` after ${formatInt(frames)} frames`;
  summary += ".";
  if (hr && Number.isFinite(hr.mean_bpm)) {
    summary += ` Mean heart rate ${hr.mean_bpm} bpm (${hr.min_bpm}–${hr.max_bpm}) from ${hr.estimates} estimates.`;
  } else if (hr) {
    summary += " No heart-rate reading was good enough.";
  }
  setText($("result-summary"), summary);
  setText($("result-json"), truncate(JSON.stringify(message, null, 2), MAX_JSON_CHARS));
  const section = $("result");
  section.hidden = false;
  section.focus({ preventScroll: true });
}

// -- signaling -----------------------------------------------------------------------------

function send(ws, message) {
  if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message));
}

function waitFor(current, type, ms) {
  return new Promise((resolve) => {
    const timer = window.setTimeout(() => {
      current.waiters.delete(type);
      resolve(null);
    }, ms);
    current.waiters.set(type, (message) => {
      window.clearTimeout(timer);
      resolve(message);
    });
  });
}

function gatheringComplete(pc, ms) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState === "complete") {
        pc.removeEventListener("icegatheringstatechange", done);
        resolve();
      }
    };
    pc.addEventListener("icegatheringstatechange", done);
    // The server does not need every candidate: go with what is there after `ms`.
    window.setTimeout(resolve, ms);
  });
}

function onSignal(current, event) {
  if (run !== current) return;
  let message;
  try {
    message = JSON.parse(event.data);
  } catch {
    return;
  }
  const waiter = current.waiters.get(message.type);
  if (waiter) {
    current.waiters.delete(message.type);
    waiter(message);
  }
  if (message.type === "answer") {
    current.sessionId = message.session_id ?? null;
    setText($("session"), current.sessionId ? `session ${current.sessionId}` : "–");
    current.pc
      .setRemoteDescription(message.data)
      .then(() => setStatus(status, "wait", "Connecting…"))
      .catch((err) => finish(current, `The server's answer cannot be used: ${err.message}`));
  } else if (message.type === "prediction") {
    onPrediction(message);
  } else if (message.type === "result") {
    showResult(message);
    finish(current, null, `Stopped (${message.reason ?? "ended"}).`);
  } else if (message.type === "error") {
    const text = message.data?.message ?? "unknown error";
    if (!current.sessionId) finish(current, `The server refused: ${text}`);
    else setStatus(status, "bad", `Server: ${text}`);
  }
}

// -- start and stop -----------------------------------------------------------------------------

function selectedModels() {
  return [...document.querySelectorAll("#models input:checked")].map((input) => input.value);
}

function resetPanels() {
  heartValues.length = 0;
  heartKey = "";
  setText($("bpm"), "–");
  setText($("heart-status"), "Waiting for a face and a few seconds of video.");
  drawHeart();
  setText($("prediction-meta"), "None yet.");
  setText($("prediction"), "{}");
  $("result").hidden = true;
  setText($("session"), "–");
  setText($("sent"), "–");
}

async function start() {
  if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) {
    setStatus(status, "bad", "The camera needs HTTPS (or localhost): start the server with --ssl.");
    return;
  }
  startButton.disabled = true;
  resetPanels();
  const current = { waiters: new Map(), predictions: 0, sessionId: null, stopping: false };
  run = current;
  try {
    setStatus(status, "wait", "Asking for the camera…");
    current.stream = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 30 } },
      audio: false,
    });
    video.srcObject = current.stream;
    video.hidden = false;
    placeholder.hidden = true;
    setStatus(status, "wait", "Opening the signaling socket…");
    try {
      current.ws = await openSocket(info.signaling_ws);
    } catch (err) {
      throw new Error(`Cannot open the signaling socket: ${err.message}`);
    }
    if (run !== current) {
      current.ws.close();
      return;
    }
    current.ws.onmessage = (event) => onSignal(current, event);
    current.ws.onclose = () => {
      if (run === current) finish(current, "The signaling socket closed.");
    };
    send(current.ws, { type: "ice-servers" });
    const ice = await waitFor(current, "ice-servers", ICE_WAIT_MS);
    const pc = new RTCPeerConnection({ iceServers: Array.isArray(ice?.data) ? ice.data : [] });
    current.pc = pc;
    pc.addEventListener("connectionstatechange", () => {
      if (run !== current) return;
      if (pc.connectionState === "connected") {
        setStatus(status, "ok", "Streaming");
        stopButton.disabled = false;
      } else if (pc.connectionState === "failed") {
        setStatus(status, "bad", "The connection failed (ICE); waiting for the server's result…");
      }
    });
    for (const track of current.stream.getVideoTracks()) pc.addTrack(track, current.stream);
    await pc.setLocalDescription(await pc.createOffer());
    await gatheringComplete(pc, GATHER_MS);
    if (run !== current) return;
    setStatus(status, "wait", "Negotiating…");
    send(current.ws, {
      type: "offer",
      data: { sdp: pc.localDescription.sdp, type: "offer" },
      models: selectedModels(),
    });
    stopButton.disabled = false;
    current.stats = window.setInterval(() => showSent(current), 1000);
  } catch (err) {
    finish(current, err.message || String(err));
  }
}

async function showSent(current) {
  if (!current.pc || run !== current) return;
  const report = await current.pc.getStats();
  for (const entry of report.values()) {
    if (entry.type === "outbound-rtp" && entry.kind === "video") {
      const fps = Number.isFinite(entry.framesPerSecond) ? ` at ${entry.framesPerSecond} fps` : "";
      setText($("sent"), `${formatInt(entry.framesSent ?? 0)} frames sent${fps}`);
    }
  }
}

async function stop() {
  const current = run;
  if (current === null || current.stopping) return;
  current.stopping = true;
  stopButton.disabled = true;
  setStatus(status, "wait", "Stopping; waiting for the final result…");
  for (const track of current.stream?.getTracks() ?? []) track.stop();
  if (current.ws && current.sessionId) {
    send(current.ws, { type: "end" });
    const result = await waitFor(current, "result", RESULT_WAIT_MS);
    if (result === null && run === current) finish(current, "No final result came back in time.");
  } else {
    finish(current, null, "Stopped.");
  }
}

/** Tear the connection down; `error` (if any) is shown, else `note`. */
function finish(current, error, note = "Stopped.") {
  if (run !== current) return;
  run = null;
  window.clearInterval(current.stats);
  for (const waiter of current.waiters.values()) waiter(null);
  current.waiters.clear();
  for (const track of current.stream?.getTracks() ?? []) track.stop();
  current.pc?.close();
  if (current.ws && current.ws.readyState <= WebSocket.OPEN) current.ws.close();
  video.srcObject = null;
  video.hidden = true;
  placeholder.hidden = false;
  if (error) setStatus(status, "bad", error);
  else setStatus(status, "ok", note);
  startButton.disabled = false;
  stopButton.disabled = true;
}

async function init() {
  try {
    info = await serverInfo();
  } catch (err) {
    setStatus(status, "bad", `Cannot reach the server: ${err.message}`);
    return;
  }
  const fieldset = $("models");
  const models = info.webrtc_models;
  fieldset.replaceChildren(
    el("legend", { text: "Models (results merge in this order)" }),
    ...(models.length
      ? models.map((m) =>
          el(
            "label",
            { title: m.name },
            el("input", { type: "checkbox", name: "model", value: m.name, checked: true }),
            m.label,
          ),
        )
      : [
          el("span", {
            class: "status",
            text: "No models for cameras: serve with --model heart_rate.",
          }),
        ]),
  );
  drawHeart();
  startButton.disabled = false;
  setStatus(status, "ok", "Ready");
}

startButton.addEventListener("click", start);
stopButton.addEventListener("click", stop);
window.addEventListener("pagehide", () => {
  if (run?.ws) send(run.ws, { type: "end" });
});
init();

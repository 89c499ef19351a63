// Faces: the saved face gallery (GET /v1/faces), newest first, one page at a time; a face
// opens large in a dialog. The first page refreshes itself as new faces are saved. The
// images come through showImage, which sends the API key when the server wants one.
import { el, poll, requestJSON, setStatus, setText, showImage } from "./common.js";

const PAGE_SIZE = 48;
const REFRESH_MS = 5000;

const $ = (id) => document.getElementById(id);
const gallery = $("gallery");
const status = $("status");
const dialog = $("dialog");

// Cursors of the pages seen so far: cursors[i] is the `before` that loads page i (null: newest).
const cursors = [null];
let pageIndex = 0;
let nextBefore = null;
let shown = ""; // the ids and versions on screen, to skip redrawing an unchanged page
let opener = null;

function faceButton(face) {
  const img = el("img", {
    alt: `Face ${face.face_id}, track ${face.track_id}`,
    width: 128,
    height: 128,
    loading: "lazy",
    decoding: "async",
  });
  showImage(img, face.url);
  const button = el(
    "button",
    { type: "button", class: "face", onclick: () => openFace(face, button) },
    img,
    el("span", {}, el("strong", { text: `#${face.face_id}` }), ` · track ${face.track_id}`),
    el("span", { text: face.time.slice(11) }),
  );
  return el("li", { dataset: { face: face.face_id } }, button);
}

function openFace(face, button) {
  opener = button;
  $("dialog-title").textContent = `Face #${face.face_id}`;
  const image = $("dialog-image");
  showImage(image, face.url);
  image.alt = `Face ${face.face_id}, track ${face.track_id}, saved ${face.time}`;
  setText($("fact-face"), face.face_id);
  setText($("fact-track"), face.track_id);
  setText($("fact-source"), face.source);
  setText($("fact-time"), face.time);
  setText($("fact-quality"), face.quality.toFixed(2));
  dialog.showModal();
}

$("dialog-close").addEventListener("click", () => dialog.close());
dialog.addEventListener("click", (event) => {
  if (event.target === dialog) dialog.close(); // a click on the backdrop
});
dialog.addEventListener("close", () => {
  if (opener && opener.isConnected) opener.focus();
});

async function load() {
  const before = cursors[pageIndex];
  const query = new URLSearchParams({ limit: PAGE_SIZE });
  if (before !== null) query.set("before", before);
  let body;
  try {
    body = await requestJSON(`/v1/faces?${query}`);
  } catch (err) {
    setStatus(status, "bad", `Cannot load faces: ${err.message}`);
    return;
  }
  nextBefore = body.next_before;
  const key = body.faces.map((f) => f.url).join(",");
  if (key !== shown) {
    // One page at most is in the DOM: the list never grows past PAGE_SIZE items.
    gallery.replaceChildren(...body.faces.map(faceButton));
    shown = key;
  }
  $("empty").hidden = body.faces.length > 0 || pageIndex > 0;
  $("newer").disabled = pageIndex === 0;
  $("older").disabled = nextBefore === null;
  setText($("page"), `Page ${pageIndex + 1}`);
  const n = body.faces.length;
  const time = new Date().toLocaleTimeString("en-GB");
  setStatus(status, "ok", `${n} face${n === 1 ? "" : "s"} on this page · updated ${time}`);
}

function go(step) {
  if (step > 0) {
    if (nextBefore === null) return;
    cursors[pageIndex + 1] = nextBefore;
    cursors.length = pageIndex + 2;
  }
  pageIndex = Math.max(0, pageIndex + step);
  shown = "";
  load().then(() => {
    // The pressed button may now be disabled (first or last page): keep focus in the pager.
    const pressed = step > 0 ? $("older") : $("newer");
    const other = step > 0 ? $("newer") : $("older");
    if (pressed.disabled && !other.disabled) other.focus();
  });
}

$("older").addEventListener("click", () => go(1));
$("newer").addEventListener("click", () => go(-1));

// Only the newest page changes as faces are saved; older pages stay put while read.
poll(async () => {
  if (pageIndex === 0 && !dialog.open) await load();
}, REFRESH_MS);

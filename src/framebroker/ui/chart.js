// Small SVG charts drawn by hand: counts per hour, a day's event timeline, a line of values.
// Each function redraws its <svg> from scratch; the viewBox keeps them fluid in width.

const NS = "http://www.w3.org/2000/svg";

function svgEl(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function reset(svg, width, height, label) {
  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
}

/** A round maximum for an axis, at or above `value`, whose half is a whole number too. */
function niceMax(value) {
  if (value <= 4) return 4;
  const step = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 5, 10]) if (m * step >= value) return m * step;
  return 10 * step;
}

const pad = (h) => String(h).padStart(2, "0");

/** Grouped bars of count_in and count_out for hours 0 to 23. */
export function hourlyChart(svg, hours) {
  const W = 480;
  const H = 200;
  const left = 30;
  const bottom = 20;
  const top = 8;
  const plotH = H - bottom - top;
  const slot = (W - left - 4) / 24;
  const maxValue = niceMax(Math.max(0, ...hours.map((h) => Math.max(h.count_in, h.count_out))));
  const busiest = hours.reduce(
    (best, h) => (h.count_in + h.count_out > best.count_in + best.count_out ? h : best),
    hours[0] ?? { hour: 0, count_in: 0, count_out: 0 },
  );
  const total = hours.reduce((sum, h) => sum + h.count_in + h.count_out, 0);
  reset(
    svg,
    W,
    H,
    total
      ? `Counts per hour today; busiest ${pad(busiest.hour)}:00 with ${busiest.count_in} in and ${busiest.count_out} out`
      : "Counts per hour today: nobody counted yet",
  );
  for (let i = 0; i <= 2; i++) {
    const value = (maxValue * i) / 2;
    const y = top + plotH - (plotH * i) / 2;
    svg.append(svgEl("line", { class: "grid", x1: left, x2: W - 4, y1: y, y2: y }));
    svg.append(svgEl("text", { class: "axis", x: left - 4, y: y + 4, "text-anchor": "end" }, value));
  }
  const barW = Math.max(1, slot / 2 - 1);
  for (const h of hours) {
    const x = left + h.hour * slot + 1;
    for (const [key, cls, dx] of [
      ["count_in", "bar-in", 0],
      ["count_out", "bar-out", barW],
    ]) {
      const value = h[key];
      const barH = (plotH * value) / maxValue;
      const rect = svgEl("rect", {
        class: cls,
        x: x + dx,
        y: top + plotH - barH,
        width: barW,
        height: barH,
      });
      rect.append(svgEl("title", {}, `${pad(h.hour)}:00 ${key === "count_in" ? "in" : "out"} ${value}`));
      svg.append(rect);
    }
    if (h.hour % 3 === 0) {
      svg.append(svgEl("text", { class: "axis", x: x + barW, y: H - 5, "text-anchor": "middle" }, pad(h.hour)));
    }
  }
}

/** A 24-hour strip with a block per event; `events` have `start` and `end` in seconds of day. */
export function timelineChart(svg, events, nowSeconds) {
  const W = 480;
  const H = 56;
  const left = 4;
  const right = W - 4;
  const x = (s) => left + ((right - left) * Math.min(Math.max(s, 0), 86400)) / 86400;
  reset(
    svg,
    W,
    H,
    events.length ? `Traffic events today: ${events.length}` : "Traffic events today: none",
  );
  svg.append(svgEl("rect", { class: "grid", x: left, y: 8, width: right - left, height: 22, fill: "none" }));
  for (const ev of events) {
    const x1 = x(ev.start);
    const x2 = Math.max(x(ev.end), x1 + 2);
    const rect = svgEl("rect", {
      class: ev.running ? "event running" : "event",
      x: x1,
      y: 9,
      width: x2 - x1,
      height: 20,
    });
    rect.append(svgEl("title", {}, ev.label));
    svg.append(rect);
  }
  if (Number.isFinite(nowSeconds)) {
    svg.append(svgEl("line", { class: "now", x1: x(nowSeconds), x2: x(nowSeconds), y1: 4, y2: 34 }));
  }
  for (let h = 0; h <= 24; h += 3) {
    const anchor = h === 0 ? "start" : h === 24 ? "end" : "middle";
    svg.append(svgEl("text", { class: "axis", x: x(h * 3600), y: 48, "text-anchor": anchor }, pad(h)));
  }
}

/**
 * A line through `values` (nulls leave gaps) on a range that widens to fit them; with
 * `capacity`, the newest value sits at the right edge and the line grows leftwards.
 */
export function lineChart(svg, values, { min, max, label, capacity = values.length }) {
  const W = 320;
  const H = 96;
  const top = 6;
  const bottom = 6;
  const left = 28;
  const finite = values.filter((v) => Number.isFinite(v));
  const lo = Math.min(min, ...finite);
  const hi = Math.max(max, ...finite);
  reset(svg, W, H, label);
  const y = (v) => top + (H - top - bottom) * (1 - (v - lo) / (hi - lo || 1));
  for (const v of [lo, hi]) {
    svg.append(svgEl("line", { class: "grid", x1: left, x2: W, y1: y(v), y2: y(v) }));
    svg.append(svgEl("text", { class: "axis", x: left - 4, y: y(v) + 4, "text-anchor": "end" }, Math.round(v)));
  }
  const n = Math.max(capacity, values.length, 2);
  const shift = n - values.length;
  const x = (i) => left + ((W - left - 8) * (i + shift)) / (n - 1);
  let path = "";
  let pen = false;
  values.forEach((v, i) => {
    if (Number.isFinite(v)) {
      path += `${pen ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
    } else {
      pen = false;
    }
  });
  if (path) svg.append(svgEl("path", { class: "line", d: path }));
  const lastIndex = values.length - 1;
  if (lastIndex >= 0 && Number.isFinite(values[lastIndex])) {
    svg.append(svgEl("circle", { class: "dot", cx: x(lastIndex), cy: y(values[lastIndex]), r: 3 }));
  }
}

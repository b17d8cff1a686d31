// Surprise-over-time line chart in plain SVG (no library: the dashboard must work offline).
// x = observation order (steps can repeat after a restore), y = surprise in [0, 1].

import { svg, score, shortHash } from "./dom.js";

const MARGIN = { left: 40, right: 18, top: 16, bottom: 34 };

function clamp01(v) {
  return Math.max(0, Math.min(1, Number(v) || 0));
}

// Calm teal for known things, warm orange for new ones.
function dotColor(v) {
  const t = clamp01(v);
  const hue = 172 - t * 150;
  return `hsl(${hue.toFixed(0)} 70% 42%)`;
}

function axes(w, hgt, n, x) {
  const parts = [];
  for (const tick of [0, 0.25, 0.5, 0.75, 1]) {
    const y = MARGIN.top + (1 - tick) * (hgt - MARGIN.top - MARGIN.bottom);
    parts.push(svg("line", { class: "grid", x1: MARGIN.left, x2: w - MARGIN.right, y1: y, y2: y }));
    parts.push(svg("text", { class: "tick", x: MARGIN.left - 6, y: y + 4, "text-anchor": "end" }, tick.toFixed(2)));
  }
  const ticks = n <= 1 ? [0] : [...new Set([0, Math.floor((n - 1) / 2), n - 1])];
  for (const i of ticks) {
    parts.push(svg("text", { class: "tick", x: x(i), y: hgt - MARGIN.bottom + 16, "text-anchor": "middle" }, `#${i + 1}`));
  }
  parts.push(svg("text", { class: "axis-label", x: w - MARGIN.right, y: hgt - 4, "text-anchor": "end" }, "observation"));
  return parts;
}

function describe(points) {
  if (!points.length) return "No observations yet.";
  const first = points[0].surprise;
  const last = points[points.length - 1].surprise;
  return `${points.length} observations. First surprise ${score(first)}, latest ${score(last)}.`;
}

export function renderSurpriseChart(host, points) {
  const w = Math.max(280, Math.round(host.clientWidth || 600));
  const hgt = w < 520 ? 200 : 250;
  const n = points.length;
  const innerW = w - MARGIN.left - MARGIN.right;
  const innerH = hgt - MARGIN.top - MARGIN.bottom;
  const x = (i) => MARGIN.left + (n <= 1 ? innerW / 2 : (i * innerW) / (n - 1));
  const y = (v) => MARGIN.top + (1 - clamp01(v)) * innerH;

  const root = svg("svg", {
    class: "chart-svg", width: w, height: hgt, viewBox: `0 0 ${w} ${hgt}`,
    role: "img", "aria-labelledby": "chart-title chart-desc", "data-points": n,
  },
  svg("title", { id: "chart-title" }, "Surprise over time"),
  svg("desc", { id: "chart-desc" }, describe(points)),
  ...axes(w, hgt, n, x));

  if (!n) {
    root.append(svg("text", { class: "empty", x: w / 2, y: hgt / 2, "text-anchor": "middle" },
      "No observations yet — use Observe to teach it something."));
    host.replaceChildren(root);
    return;
  }
  const coords = points.map((p, i) => [x(i), y(p.surprise)]);
  const line = coords.map(([cx, cy], i) => `${i ? "L" : "M"}${cx.toFixed(1)},${cy.toFixed(1)}`).join("");
  const base = y(0).toFixed(1);
  const area = `${line}L${coords[n - 1][0].toFixed(1)},${base}L${coords[0][0].toFixed(1)},${base}Z`;
  root.append(svg("path", { class: "area", d: area }), svg("path", { class: "line", d: line }));

  const radius = n > 120 ? 2 : 3.5;
  points.forEach((p, i) => {
    const last = i === n - 1;
    const undone = p.undone ? " (undone by a restore)" : "";
    const dot = svg("circle", {
      class: `dot${last ? " last" : ""}${p.undone ? " undone" : ""}`, cx: coords[i][0], cy: coords[i][1],
      r: last ? 6 : radius, fill: p.undone ? "#ffffff" : dotColor(p.surprise),
    }, svg("title", {}, `#${i + 1} (step ${p.step}): surprise ${score(p.surprise)}, weights ${shortHash(p.weight_hash)}${undone} — ${p.text || ""}`));
    root.append(dot);
  });
  const [lx, ly] = coords[n - 1];
  const anchor = lx > w - 90 ? "end" : "start";
  root.append(svg("text", {
    class: "last-label", x: anchor === "end" ? lx - 10 : lx + 10, y: Math.max(ly - 10, 14), "text-anchor": anchor,
  }, score(points[n - 1].surprise)));
  host.replaceChildren(root);
}

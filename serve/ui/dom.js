// Tiny DOM and formatting helpers. Text always goes in via textContent, never innerHTML:
// observations are user text and must not become markup.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";

export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value == null || value === false) continue;
    if (key === "class") el.setAttribute("class", value);
    else if (key === "text") el.textContent = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
}

function append(el, children) {
  for (const child of children.flat()) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

export function $(id) {
  return document.getElementById(id);
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// A short fingerprint is enough for a person to see "the weights changed"; the full hash
// stays in the title attribute for anyone who wants to compare it.
export function shortHash(hash) {
  return hash ? String(hash).slice(0, 6) : "—";
}

export function hashEl(hash) {
  return h("code", { class: "hash", title: hash || "" , text: shortHash(hash) });
}

export function score(x) {
  return Number.isFinite(x) ? x.toFixed(2) : "—";
}

export function percent(x) {
  return Number.isFinite(x) ? `${Math.round(x * 100)}%` : "—";
}

export function count(n) {
  if (!Number.isFinite(n)) return "—";
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)} M`;
  if (n >= 1e4) return `${(n / 1e3).toFixed(1)} k`;
  return n.toLocaleString("en");
}

export function clock(iso) {
  const d = iso ? new Date(iso) : new Date();
  return Number.isNaN(d.getTime()) ? "" : d.toLocaleTimeString("en-GB");
}

// Words a non-expert can read next to a surprise number.
export function surpriseWord(x) {
  if (!Number.isFinite(x)) return "";
  if (x >= 0.6) return "new to the memory";
  if (x >= 0.25) return "partly familiar";
  return "already known";
}

export function surpriseLevel(x) {
  if (x >= 0.6) return "high";
  if (x >= 0.25) return "mid";
  return "low";
}

export function bar(value, label, level = "") {
  const v = Math.max(0, Math.min(1, Number(value) || 0));
  const fill = h("span");
  fill.style.width = `${(v * 100).toFixed(1)}%`; // CSSOM, not a style attribute: CSP-friendly
  return h("span", { class: `bar ${level}`.trim(), role: "img", "aria-label": label }, fill);
}

// Lineage tree: memory -> its checkpoints -> the forks made from each checkpoint.
// Plain nested lists (keyboard and screen-reader friendly); the connectors are CSS.

import { h, shortHash, clock } from "./dom.js";

// Parents may come back fully qualified ("tenant/name"); the page works with short names.
function shortName(name) {
  if (!name) return null;
  const s = String(name);
  return s.includes("/") ? s.slice(s.lastIndexOf("/") + 1) : s;
}

function byCreated(a, b) {
  return String(a.created_at || "").localeCompare(String(b.created_at || ""));
}

function memoryNode(mem, ctx, note) {
  const selected = mem.name === ctx.selected;
  const node = h("div", { class: "node memory-node" },
    h("button", {
      type: "button", class: "tree-memory", "data-name": mem.name,
      "aria-current": selected ? "true" : null,
      "aria-label": `Open memory ${mem.name}`,
      onclick: () => ctx.onSelect(mem.name),
    }, mem.name),
    h("span", { class: `badge ${mem.live ? "live" : "asleep"}` }, mem.live ? "live" : "hibernated"),
    note ? h("span", { class: "muted" }, note) : null);
  return h("li", {}, node, childrenList(mem, ctx));
}

function checkpointNode(mem, cp, forks, ctx) {
  const label = h("div", { class: "node checkpoint-node tree-checkpoint", "data-tag": cp.tag },
    h("span", { class: "flag", "aria-hidden": "true" }, "⚑"),
    h("span", { class: "cp-tag" }, cp.tag),
    h("span", { class: "muted" }, ` step ${cp.step ?? "?"} · weights `),
    h("code", { class: "hash", title: cp.weight_hash || "" }, shortHash(cp.weight_hash)),
    cp.description ? h("span", { class: "muted" }, ` · ${cp.description}`) : null,
    h("span", { class: "visually-hidden" }, ` checkpoint of ${mem.name}, saved ${clock(cp.created_at)}`));
  const kids = forks.map((child) => memoryNode(child, ctx, null));
  return h("li", {}, label, kids.length ? h("ul", {}, kids) : null);
}

function childrenList(mem, ctx) {
  if (ctx.seen.has(mem.name)) return null; // defensive: a cycle must not hang the page
  ctx.seen.add(mem.name);
  const cps = [...(mem.checkpoints || [])].sort(byCreated);
  const tags = new Set(cps.map((c) => c.tag));
  const kids = (ctx.children.get(mem.name) || []).sort(byCreated);
  const items = cps.map((cp) => checkpointNode(mem, cp, kids.filter((k) => k.source_tag === cp.tag), ctx));
  for (const child of kids.filter((k) => !tags.has(k.source_tag))) {
    const note = child.source_tag ? `forked from “${child.source_tag}”` : "forked from current state";
    items.push(memoryNode(child, ctx, note));
  }
  return items.length ? h("ul", {}, items) : null;
}

export function renderLineage(host, memories, selected, onSelect) {
  const mems = memories.map((m) => ({ ...m, parent: shortName(m.parent) }));
  const names = new Set(mems.map((m) => m.name));
  const children = new Map();
  const roots = [];
  for (const mem of mems) {
    // a fork of a deleted memory stays a root: its parent's name may now be another memory's
    if (mem.parent && !mem.parent_deleted && names.has(mem.parent) && mem.parent !== mem.name) {
      if (!children.has(mem.parent)) children.set(mem.parent, []);
      children.get(mem.parent).push(mem);
    } else {
      roots.push(mem);
    }
  }
  if (!roots.length) {
    host.replaceChildren(h("p", { class: "muted" }, "No memories yet."));
    return;
  }
  const ctx = { children, selected, onSelect, seen: new Set() };
  const items = roots.sort(byCreated).map((mem) =>
    memoryNode(mem, ctx, mem.parent ? `from ${mem.parent}${mem.parent_deleted ? " (deleted)" : ""}` : null));
  host.replaceChildren(h("ul", { class: "tree", "data-count": mems.length }, items));
}

// Dashboard entry point: connection, polling, and the read-only views. The action forms live
// in actions.js; both talk to the gateway only through api.js (the public /v1 contract).

import { api, getKey, setKey } from "./api.js";
import { $, h, clear, hashEl, score, percent, count, clock, surpriseWord, surpriseLevel, bar } from "./dom.js";
import { renderSurpriseChart } from "./chart.js";
import { renderLineage } from "./lineage.js";
import { wireActions } from "./actions.js";

const POLL_MS = 1500;       // history + list: cheap reads from the metadata store
const LINEAGE_MS = 6000;    // the lineage tree (with checkpoints) changes less often than the list
const PAGE = 50;            // memories per page: the list and the tree never render more
const NAME_PREFIX = /^[a-z0-9._-]*$/;

const state = {
  connected: false,
  memories: [],       // the page shown (a tenant may have 10,000: never fetch them all)
  page: { prefix: "", cursor: null, back: [], next: null },
  searchProblem: null,  // what is wrong with the search box's text (its listing is not shown)
  current: null,      // summary of the selected memory, which may be on another page
  stats: {},          // name -> last stats seen (kept so the list can show them)
  hashes: {},         // name -> current weight hash as far as the page knows
  selected: null,
  history: [],
  historySig: "",
  lineage: [],        // one page of memories, each with its checkpoints [{tag, created_at, step, ...}]
  lineageAt: 0,
  activity: [],
};
const seq = { list: 0, history: 0, details: 0, lineage: 0 };
let timer = null;

// ---- status and errors -------------------------------------------------------------------

function setStatus(kind, text) {
  const el = $("conn-status");
  el.dataset.state = kind;
  el.textContent = text;
}

function showError(message) {
  const el = $("error-banner");
  clear(el, h("span", {}, message),
    h("button", { type: "button", class: "ghost", "aria-label": "Dismiss error", onclick: hideError }, "×"));
  el.hidden = false;
}

function hideError() {
  $("error-banner").hidden = true;
}

function log(memory, ...parts) {
  state.activity.unshift({ at: new Date().toISOString(), memory, parts });
  state.activity.length = Math.min(state.activity.length, 40);
  renderActivity();
}

// ---- fetching ----------------------------------------------------------------------------

async function refreshList() {
  const my = ++seq.list;
  const { prefix, cursor } = state.page;
  const data = await api.listMemories({ cursor, limit: PAGE, prefix });
  const memories = (data && data.memories) || [];
  const name = state.selected;
  const current = name ? memories.find((m) => m.name === name) || await findMemory(name) : null;
  if (my !== seq.list) return;
  const before = state.memories.map((m) => m.name).join();
  state.memories = memories;
  state.page.next = (data && data.next_cursor) || null;
  if (memories.map((m) => m.name).join() !== before) state.lineageAt = 0;
  state.current = current;
  if (name && !current && name === state.selected) select(null); // deleted
  renderMemoryList();
  renderHeader();
  if (state.connected) setStatus("ok", connectedText());
}

// The summary of one memory, wherever its page is: the first name starting with it is itself.
async function findMemory(name) {
  const data = await api.listMemories({ prefix: name, limit: 1 });
  const m = ((data && data.memories) || [])[0];
  return m && m.name === name ? m : null;
}

async function refreshHistory(force = false) {
  const name = state.selected;
  const my = ++seq.history;
  const data = await api.history(name, 200);
  if (my !== seq.history || name !== state.selected) return;
  const obs = (data && data.observations) || [];
  const last = obs[obs.length - 1];
  const sig = last ? `${obs.length}|${last.step}|${last.at}|${last.weight_hash}` : "0";
  if (sig === state.historySig && !force) return;
  state.history = obs;
  state.historySig = sig;
  renderHistoryViews();
  await refreshDetails(name);
}

async function refreshDetails(name) {
  const my = ++seq.details;
  const [stats, explained] = await Promise.allSettled([api.stats(name), api.explain(name, 5)]);
  if (my !== seq.details || name !== state.selected) return;
  if (stats.status === "fulfilled") {
    state.stats[name] = stats.value;
    if (stats.value.weight_hash) state.hashes[name] = stats.value.weight_hash;
  }
  renderStats(stats.status === "rejected" ? stats.reason : null);
  renderHistoryViews(); // the current step decides which observations a restore undid
  renderPatterns(explained.status === "fulfilled" ? explained.value.patterns || [] : explained.reason);
  renderMemoryList();
}

async function refreshLineage() {
  const my = ++seq.lineage;
  const { prefix, cursor } = state.page;
  // One call: each memory comes with its checkpoints. If it fails, what was last read stays.
  const data = await api.lineage({ cursor, limit: PAGE, prefix });
  if (my !== seq.lineage) return;
  state.lineage = (data && data.memories) || [];
  state.lineageAt = Date.now();
  renderLineageCard();
  renderCheckpointChoices();
}

async function refreshAll({ force = false, lineage = false } = {}) {
  await refreshList();
  if (state.selected) await refreshHistory(force);
  if (lineage || force || Date.now() - state.lineageAt > LINEAGE_MS) await refreshLineage();
}

// ---- polling ----------------------------------------------------------------------------

function schedule() {
  clearTimeout(timer);
  if (state.connected) timer = setTimeout(tick, POLL_MS);
}

async function tick() {
  if (!state.connected) return;
  if (!document.hidden) {
    try {
      await refreshAll();
      setStatus("ok", connectedText());
    } catch (exc) {
      handleFailure(exc, true);
    }
  }
  schedule();
}

function connectedText() {
  const n = state.memories.length;
  const more = state.page.next || state.page.back.length ? " on this page" : "";
  return `Connected · ${n} ${n === 1 ? "memory" : "memories"}${more} · updated ${clock()}`;
}

function handleFailure(exc, polling) {
  if (exc.status === 401 || exc.status === 403) {
    state.connected = false;
    setStatus("warn", "Enter a valid API key and press Connect");
    showError(exc.message);
  } else if (polling) {
    setStatus("error", `Connection problem: ${exc.message} (retrying)`);
  } else {
    showError(exc.message);
  }
}

async function connect({ silent = false } = {}) {
  setStatus("busy", "Connecting…");
  try {
    await refreshList();
    state.connected = true;
    hideError();
    setStatus("ok", connectedText());
    $("lineage-card").hidden = false;
    if (!state.selected && state.memories.length === 1 && !state.page.next) select(state.memories[0].name);
    await refreshAll({ force: true, lineage: true });
  } catch (exc) {
    state.connected = false;
    const needKey = exc.status === 401 || exc.status === 403;
    setStatus(needKey ? "warn" : "error", needKey ? "Enter your API key and press Connect" : exc.message);
    if (!silent) showError(exc.message);
  }
  schedule();
}

// ---- selection -------------------------------------------------------------------------

function select(name) {
  if (name && name === state.selected && !$("memory-view").hidden) return; // already open
  state.selected = name;
  state.current = (name && state.memories.find((m) => m.name === name)) || null;
  state.history = [];
  state.historySig = "";
  history.replaceState(null, "", name ? `#memory=${encodeURIComponent(name)}` : location.pathname);
  $("result").replaceChildren();
  renderMemoryList();
  revealSelected();
  renderHeader();
  renderHistoryViews();
  renderStats(null);
  renderCheckpointChoices();
  renderLineageCard();
  if (name && state.connected) {
    if (!state.current) refreshList().catch((exc) => handleFailure(exc, false)); // on another page
    refreshHistory(true).catch((exc) => handleFailure(exc, false));
  }
}

// ---- pages and search ------------------------------------------------------------------

async function showPage(page) {
  state.page = page;
  state.lineageAt = 0;
  try {
    await refreshAll();
  } catch (exc) {
    handleFailure(exc, false);
  }
}

function setSearch(text) {
  const prefix = text.trim().toLowerCase();
  $("memory-search").value = prefix;
  // Kept until the box holds a valid prefix again: polling must not put back the last results.
  state.searchProblem = NAME_PREFIX.test(prefix) ? null : "Memory names use only a-z 0-9 . _ -";
  if (state.searchProblem) {
    renderMemoryList();
    return;
  }
  showPage({ prefix, cursor: null, back: [], next: null });
}

function wirePager() {
  let typing = null;
  $("memory-search").addEventListener("input", (ev) => {
    clearTimeout(typing);
    typing = setTimeout(() => setSearch(ev.target.value), 250);
  });
  $("page-next").addEventListener("click", () => {
    const { prefix, cursor, back, next } = state.page;
    if (next) showPage({ prefix, cursor: next, back: [...back, cursor], next: null });
  });
  $("page-prev").addEventListener("click", () => {
    const { prefix, back } = state.page;
    if (back.length) showPage({ prefix, cursor: back[back.length - 1], back: back.slice(0, -1), next: null });
  });
}

function renderPager() {
  const { back, next } = state.page;
  const first = back.length * PAGE + 1;
  const shown = state.memories.length;
  $("page-prev").disabled = !back.length;
  $("page-next").disabled = !next;
  $("page-info").textContent = shown ? `${first}–${first + shown - 1}${next ? " of more" : ""}` : "";
}

// ---- rendering -------------------------------------------------------------------------

function forkParent(m) {
  const name = String(m.parent).split("/").pop();
  return m.parent_deleted ? `${name} (deleted)` : name;
}

function renderMemoryList() {
  const list = $("memory-list");
  renderPager();
  if (state.searchProblem) {
    clear(list, h("li", { class: "muted search-problem" }, state.searchProblem));
    return;
  }
  if (!state.memories.length) {
    const none = state.page.prefix ? `No memory name starts with “${state.page.prefix}”.` : "No memories yet — create one below.";
    clear(list, h("li", { class: "muted" }, state.connected ? none : "Not connected."));
    return;
  }
  clear(list, state.memories.map((m) => {
    const st = state.stats[m.name];
    return h("li", {}, h("button", {
      type: "button", class: "memory-item", "data-name": m.name,
      "aria-current": m.name === state.selected ? "true" : null,
      onclick: () => select(m.name),
    },
    h("span", { class: "mi-name" }, m.name),
    h("span", { class: `badge ${memoryState(m).badge}` }, memoryState(m).short),
    h("span", { class: "mi-meta" },
      `${count(m.total_observations)} observations`,
      st ? ` · ${count(st.weight_parameters)} params · ${percent(st.capacity_used)} used` : "",
      m.parent ? ` · fork of ${forkParent(m)}` : "")));
  }));
}

// A memory's state badge: still being created (calls answer busy), live, or hibernated.
function memoryState(m) {
  if (m.being_created) return { badge: "creating", short: "being created", long: "being created (retry shortly)" };
  return m.live ? { badge: "live", short: "live", long: "live (in memory)" }
    : { badge: "asleep", short: "hibernated", long: "hibernated (on disk)" };
}

// Scroll the memory list itself (never the page) so the selected memory is in view.
function revealSelected() {
  const list = $("memory-list");
  const item = list.querySelector("[aria-current='true']");
  if (!item) return;
  const top = item.offsetTop;
  if (top < list.scrollTop || top + item.offsetHeight > list.scrollTop + list.clientHeight) {
    list.scrollTop = top - list.clientHeight / 3;
  }
}

function renderHeader() {
  const m = state.current;
  $("memory-view").hidden = !m;
  $("empty-state").hidden = Boolean(m);
  if (!m) return;
  $("memory-title").textContent = m.name;
  const badge = $("memory-state");
  const stateOf = memoryState(m);
  badge.className = `badge ${stateOf.badge}`;
  badge.textContent = stateOf.long;
  $("memory-parent").textContent = m.parent ? `forked from ${forkParent(m)}` : "";
}

// "412 patterns · 3.1 MB": how full the pattern book is and what the saved state weighs.
function sizeText(st) {
  const parts = [];
  if (st.patterns != null) parts.push(`${count(st.patterns)} pattern${st.patterns === 1 ? "" : "s"}`);
  if (st.size_mb != null) parts.push(`${Number(st.size_mb).toFixed(1)} MB`);
  return parts.join(" · ");
}

function renderStats(error) {
  const st = state.stats[state.selected];
  const m = state.current;
  $("stat-obs").textContent = count(st ? st.total_observations : m && m.total_observations);
  $("stat-params").textContent = st ? Number(st.weight_parameters).toLocaleString("en") : "—";
  $("stat-params").title = st ? String(st.weight_parameters) : "";
  $("stat-capacity").textContent = st ? percent(st.capacity_used) : "—";
  $("stat-capacity-bar").style.width = st ? `${Math.min(100, st.capacity_used * 100)}%` : "0";
  $("stat-size").textContent = st ? sizeText(st) : "";
  $("stat-surprise").textContent = st ? `${score(st.avg_surprise)}` : "—";
  clear($("stat-hash"), hashEl(state.hashes[state.selected]));
  if (error) $("stat-surprise").textContent = `unavailable: ${error.message}`;
}

// An observation is undone when a restore rolled the weights back past it: a later
// observation reused its step, or the memory's current step is below it.
function markUndone(obs, currentStep) {
  let minAfter = Number.isFinite(currentStep) ? currentStep + 1 : Infinity;
  const out = obs.map((o) => ({ ...o }));
  for (let i = out.length - 1; i >= 0; i -= 1) {
    out[i].undone = out[i].step >= minAfter;
    minAfter = Math.min(minAfter, out[i].step);
  }
  return out;
}

function renderHistoryViews() {
  const st = state.stats[state.selected];
  state.history = markUndone(state.history, st ? st.total_observations : NaN);
  renderChart();
  renderRecent();
  renderHashes();
}

function renderChart() {
  const obs = state.history;
  renderSurpriseChart($("chart"), obs);
  const trend = $("chart-trend");
  const last = obs[obs.length - 1];
  if (!last) {
    trend.textContent = "";
    return;
  }
  // The headline a person cares about: did the text it just saw get less surprising?
  const earlier = obs.find((o) => o.text === last.text);
  trend.textContent = earlier !== last && earlier.surprise > last.surprise
    ? `same text again: surprise fell ${score(earlier.surprise)} → ${score(last.surprise)}`
    : `latest: ${score(last.surprise)} — ${surpriseWord(last.surprise)}`;
}

function renderRecent() {
  const rows = state.history.slice(-25).reverse().map((o) => h("tr", { class: o.undone ? "undone" : null },
    h("td", { class: "num" }, String(o.step)),
    h("td", { class: "text" }, o.text || "",
      o.undone ? h("span", { class: "badge" }, "undone by a restore") : null),
    h("td", { class: `num surprise ${surpriseLevel(o.surprise)}` },
      bar(o.surprise, `surprise ${score(o.surprise)}`, surpriseLevel(o.surprise)), ` ${score(o.surprise)}`)));
  const tbody = $("recent").tBodies[0];
  clear(tbody, rows.length ? rows : h("tr", {}, h("td", { colspan: 3, class: "muted" }, "Nothing observed yet.")));
}

function renderHashes() {
  const obs = state.history;
  const items = [];
  for (let i = obs.length - 1; i >= 1 && items.length < 12; i -= 1) {
    if (obs[i].weight_hash === obs[i - 1].weight_hash) continue;
    items.push(h("li", { class: "hash-change" },
      h("span", { class: "muted" }, `step ${obs[i].step} · ${clock(obs[i].at)}`),
      h("span", {}, "weights changed: ", hashEl(obs[i - 1].weight_hash), " → ", hashEl(obs[i].weight_hash))));
  }
  if (obs.length) {
    items.push(h("li", { class: "hash-change" },
      h("span", { class: "muted" }, `step ${obs[0].step} · ${clock(obs[0].at)}`),
      h("span", {}, "first observation shown: weights became ", hashEl(obs[0].weight_hash))));
  }
  clear($("hashes"), items.length ? items : h("li", { class: "muted" }, "No weight changes yet."));
}

function renderPatterns(patternsOrError) {
  const el = $("patterns");
  if (patternsOrError instanceof Error) {
    clear(el, h("li", { class: "muted" }, `Could not load patterns: ${patternsOrError.message}`));
    return;
  }
  if (!patternsOrError.length) {
    clear(el, h("li", { class: "muted" }, "No patterns learned yet."));
    return;
  }
  clear(el, patternsOrError.map((p) => h("li", {},
    h("div", { class: "pattern-head" },
      h("span", { class: "pattern-desc" }, p.description),
      h("span", { class: "muted" }, ` strength ${score(p.strength)}`)),
    bar(Math.min(1, p.strength), `strength ${score(p.strength)}`),
    (p.examples || []).length
      ? h("ul", { class: "examples" }, p.examples.slice(0, 2).map((e) => h("li", {}, e)))
      : null)));
}

function renderActivity() {
  const el = $("activity");
  if (!state.activity.length) {
    clear(el, h("li", { class: "muted" }, "Use the actions to see what the memory does."));
    return;
  }
  clear(el, state.activity.map((a) => h("li", {},
    h("span", { class: "muted" }, `${clock(a.at)} · ${a.memory}`), h("span", {}, ...a.parts))));
}

function renderLineageCard() {
  if (!state.connected && !state.lineage.length) return;
  renderLineage($("lineage"), state.lineage, state.selected, select);
}

function renderCheckpointChoices() {
  const cps = state.lineage.find((m) => m.name === state.selected)?.checkpoints || [];
  const restore = $("restore-tag");
  const keep = restore.value;
  clear(restore, cps.length
    ? cps.map((c) => h("option", { value: c.tag }, `${c.tag} (step ${c.step ?? "?"})`))
    : h("option", { value: "" }, "No checkpoints yet"));
  if (cps.some((c) => c.tag === keep)) restore.value = keep;
  const fork = $("fork-source");
  const keepFork = fork.value;
  clear(fork, h("option", { value: "" }, "Current state"),
    cps.map((c) => h("option", { value: c.tag }, `Checkpoint “${c.tag}”`)));
  if (cps.some((c) => c.tag === keepFork)) fork.value = keepFork;
}

// ---- boot ------------------------------------------------------------------------------

function wireKeyForm() {
  $("api-key").value = getKey();
  $("key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    setKey($("api-key").value.trim());
    connect();
  });
  $("forget-key").addEventListener("click", () => {
    setKey("");
    $("api-key").value = "";
    state.connected = false;
    clearTimeout(timer);
    setStatus("idle", "Key forgotten — not connected");
  });
}

function boot() {
  wireKeyForm();
  wirePager();
  wireActions({
    state, log, select, setSearch,
    showError, hideError,
    refresh: (opts) => refreshAll({ force: true, ...opts }),
  });
  new ResizeObserver(() => requestAnimationFrame(renderChart)).observe($("chart"));
  document.addEventListener("visibilitychange", () => { if (!document.hidden) tick(); });
  select(new URLSearchParams(location.hash.slice(1)).get("memory"));
  renderActivity();
  // Auth may be off on loopback: try without a key, quietly, before asking for one.
  connect({ silent: !getKey() });
}

boot();

// The interactive panel: each form makes one REST call and explains the answer in plain words
// ("weights changed: abc123 → 9f0e11", "surprise fell 0.97 → 0.05").

import { api } from "./api.js";
import { onImport } from "./upload.js";
import { $, h, clear, hashEl, score, percent, surpriseWord, surpriseLevel, bar } from "./dom.js";

const EXAMPLE = "Grokking is when a model suddenly generalizes after extensive overfitting. "
  + "It was discovered by OpenAI in 2022 and shows delayed generalization.";

let ctx = null;
// First answers per memory and text this session, so a repeat can say how much it changed.
const firstSeen = new Map();

function remember(kind, memory, text, value) {
  const key = `${kind}\u0000${memory}\u0000${text}`;
  if (!firstSeen.has(key)) firstSeen.set(key, value);
  return firstSeen.get(key);
}

function change(label, before, after, fmt) {
  if (before == null || before === after) return null;
  const verb = after < before ? "fell" : "rose";
  const rel = before > 0 ? ` (${after < before ? "−" : "+"}${Math.round(Math.abs(after - before) / before * 100)}%)` : "";
  return h("p", { class: `takeaway ${after < before ? "down" : "up"}` },
    `${label} ${verb} ${fmt(before)} → ${fmt(after)}${rel}`);
}

function weightsText(before, after) {
  if (!after) return "";
  if (before && before === after) return h("span", {}, "weights unchanged: ", hashEl(after));
  return h("span", { class: "weights-changed" }, "weights changed: ", hashEl(before), " → ", hashEl(after));
}

function weightsLine(before, after) {
  return after ? h("p", { class: "takeaway weights" }, weightsText(before, after)) : null;
}

function showResult(title, ...body) {
  clear($("result"), h("div", { class: "result-card", "data-kind": title }, h("h4", {}, title), ...body));
}

function kv(label, value) {
  return h("div", { class: "kv" }, h("span", { class: "muted" }, label), h("span", {}, value));
}

// Earliest surprise the server remembers for this exact text, if any (history may truncate).
function earliestSurprise(text) {
  const hit = ctx.state.history.find((o) => o.text === text);
  return hit ? hit.surprise : null;
}

async function onObserve(form, name) {
  const text = form.context.value.trim();
  const lr = form.learning_rate.value === "" ? undefined : Number(form.learning_rate.value);
  const earlier = earliestSurprise(text);
  const before = ctx.state.hashes[name];
  const r = await api.observe(name, { context: text, domain: form.domain.value.trim(), learning_rate: lr });
  ctx.state.hashes[name] = r.weight_hash;
  const first = earlier ?? remember("observe", name, text, r.surprise);
  const fell = change("surprise", first, r.surprise, score);
  showResult("Learned it",
    h("p", { class: `big ${surpriseLevel(r.surprise)}` }, `surprise ${score(r.surprise)} — ${surpriseWord(r.surprise)}`),
    bar(r.surprise, `surprise ${score(r.surprise)}`, surpriseLevel(r.surprise)),
    fell ? h("p", { class: "hint" }, "compared with the first time it saw this text:") : null, fell,
    weightsLine(before, r.weight_hash),
    kv("step", String(r.step)), kv("size of the weight update", Number(r.weight_delta).toExponential(2)),
    (r.patterns_activated || []).length ? kv("patterns activated", r.patterns_activated.join(" · ")) : null,
    h("button", { type: "button", class: "ghost", onclick: () => form.requestSubmit() }, "Observe the same text again"));
  ctx.log(name, `observed: surprise ${score(r.surprise)} · `, weightsText(before, r.weight_hash));
  if (fell) ctx.log(name, fell.textContent);
}

async function onSurprise(form, name) {
  const text = form.input.value.trim();
  const r = await api.surprise(name, text);
  const first = remember("surprise", name, text, r.score);
  showResult("Surprise",
    h("p", { class: `big ${surpriseLevel(r.score)}` }, `${score(r.score)} — ${surpriseWord(r.score)}`),
    bar(r.score, `surprise ${score(r.score)}`, surpriseLevel(r.score)),
    change("surprise", first, r.score, score),
    kv("closest thing it knows", r.nearest_pattern || "nothing yet"),
    kv("recommendation", r.recommendation));
  ctx.log(name, `surprise check: ${score(r.score)} (${surpriseWord(r.score)})`);
}

async function onInfer(form, name) {
  const prompt = form.prompt.value.trim();
  const topK = form.top_k.value === "" ? undefined : Number.parseInt(form.top_k.value, 10);
  const r = await api.infer(name, { prompt, top_k: topK });
  const first = remember("infer", name, prompt, r.confidence);
  const weights = (r.attention_weights || []).slice(0, 5);
  showResult("Answer",
    h("blockquote", { class: "answer" }, r.response || "(no answer yet — teach it something first)"),
    h("p", { class: "big" }, `confidence ${percent(r.confidence)}`),
    bar(r.confidence, `confidence ${percent(r.confidence)}`),
    change("confidence", first, r.confidence, percent),
    weights.length ? h("p", { class: "hint" }, "what it attended to:") : null,
    weights.length ? h("ol", { class: "attention" }, weights.map((w) => h("li", {},
      bar(w.weight, `weight ${score(w.weight)}`), h("span", {}, ` ${score(w.weight)} `), h("span", {}, w.pattern)))) : null);
  ctx.log(name, `asked “${prompt.slice(0, 40)}”: confidence ${percent(r.confidence)}`);
}

async function onCheckpoint(form, name) {
  const tag = form.tag.value.trim();
  const r = await api.checkpoint(name, { tag, description: form.description.value.trim() });
  showResult("Checkpoint saved",
    h("p", { class: "takeaway" }, `saved “${tag}” with weights `, hashEl(r.weight_hash)),
    kv("size", `${Number(r.size_mb).toFixed(2)} MB`), kv("id", r.checkpoint_id));
  ctx.log(name, `checkpoint “${tag}” saved: weights `, hashEl(r.weight_hash));
  form.reset();
  await ctx.refresh({ lineage: true });
}

async function onRestore(form, name) {
  const tag = form.tag.value;
  if (!tag) throw new Error("Save a checkpoint first, then pick it here.");
  const before = ctx.state.hashes[name];
  const r = await api.restore(name, tag);
  ctx.state.hashes[name] = r.weight_hash;
  showResult("Restored",
    h("p", { class: "takeaway" }, `back to “${tag}”`),
    weightsLine(before, r.weight_hash),
    kv("learning undone", `${r.learning_since_checkpoint} observation(s)`));
  ctx.log(name, `restored “${tag}” · `, weightsText(before, r.weight_hash));
  await ctx.refresh({ lineage: true });
}

async function onFork(form, name) {
  const newName = form.new_name.value.trim();
  const tag = form.source_tag.value;
  const r = await api.fork(name, { new_name: newName, source_tag: tag || undefined });
  const from = tag ? `checkpoint “${tag}”` : "its current state";
  showResult("Forked",
    h("p", { class: "takeaway" }, `${newName} now branches off ${name} at ${from}`),
    h("p", {}, "new branch starts with weights ", hashEl(r.new_hash), " (source ", hashEl(r.source_hash), ")"),
    h("button", { type: "button", class: "ghost", onclick: () => ctx.select(newName) }, `Open ${newName}`));
  ctx.log(name, `forked into ${newName} from ${from}`);
  form.new_name.value = "";
  await ctx.refresh({ lineage: true });
}

async function onConsolidate(form, name) {
  const r = await api.consolidate(name);
  showResult("Consolidated",
    kv("patterns merged", String(r.patterns_merged)),
    kv("pattern memory compressed by", `${Number(r.memory_compressed_by).toFixed(1)}%`),
    kv("stability", score(r.stability_score)));
  ctx.log(name, `consolidated: ${r.patterns_merged} pattern(s) merged`);
}

const HANDLERS = {
  "panel-observe": onObserve, "panel-surprise": onSurprise, "panel-infer": onInfer,
  "panel-checkpoint": onCheckpoint, "panel-restore": onRestore, "panel-fork": onFork,
  "panel-consolidate": onConsolidate,
  "panel-import": async (form, name) => showResult("Import", await onImport(form, name, ctx.log)),
};

// Every form: block double submits, show the server's error message, then refresh the views.
function wireForm(form, handler) {
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const name = ctx.state.selected;
    if (!name) return;
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    form.setAttribute("aria-busy", "true");
    try {
      ctx.hideError();
      await handler(form, name);
      await ctx.refresh({});
    } catch (exc) {
      showResult("Something went wrong", h("p", { class: "error-text", role: "alert" }, exc.message));
    } finally {
      button.disabled = false;
      form.removeAttribute("aria-busy");
    }
  });
}

async function onCreate(ev) {
  ev.preventDefault();
  const form = ev.currentTarget;
  const name = $("create-name").value.trim();
  const encoder = $("create-encoder").value;
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    ctx.hideError();
    const r = await api.createMemory(name, encoder ? { encoder } : undefined);
    ctx.state.hashes[name] = r.weight_hash;
    ctx.log(name, `created with ${r.weight_parameters.toLocaleString("en")} weight parameters, weights `, hashEl(r.weight_hash));
    form.reset();
    await ctx.refresh({ lineage: true });
    // A tenant may have thousands of memories: show the new one's page by searching its name.
    if (!ctx.state.memories.some((m) => m.name === name)) ctx.setSearch(name);
    ctx.select(name);
  } catch (exc) {
    ctx.showError(exc.message);
  } finally {
    button.disabled = false;
  }
}

// ARIA tabs: arrow keys move between tabs, only the selected tab is in the tab order.
function wireTabs() {
  const tabs = [...document.querySelectorAll("[role=tab]")];
  const activate = (tab, focus) => {
    for (const t of tabs) {
      const on = t === tab;
      t.setAttribute("aria-selected", String(on));
      t.tabIndex = on ? 0 : -1;
      $(t.getAttribute("aria-controls")).hidden = !on;
    }
    if (focus) tab.focus();
  };
  tabs.forEach((tab, i) => {
    tab.addEventListener("click", () => activate(tab, false));
    tab.addEventListener("keydown", (ev) => {
      const step = { ArrowRight: 1, ArrowLeft: -1, Home: -i, End: tabs.length - 1 - i }[ev.key];
      if (step === undefined) return;
      ev.preventDefault();
      activate(tabs[(i + step + tabs.length) % tabs.length], true);
    });
  });
}

export function wireActions(context) {
  ctx = context;
  wireTabs();
  for (const [id, handler] of Object.entries(HANDLERS)) wireForm($(id), handler);
  $("create-form").addEventListener("submit", onCreate);
  $("observe-example").addEventListener("click", () => {
    $("observe-text").value = EXAMPLE;
    $("observe-text").focus();
  });
}

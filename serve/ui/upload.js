// The Import tab: a file -> the server splits it exactly as `neural-memory import` does
// (POST /v1/import/parse, which learns nothing) -> batches of texts sent to observe, each with a
// request id derived from the file's bytes, so pressing Import again after a failure resends a
// batch the server already applied without learning it twice. Batches are cut like the command
// cuts them (up to 256 texts and 512 KiB), and two are in flight, each naming the one before it
// (`after_request_id`), so the server learns them in file order. Progress: items, rate, ETA and
// the running surprise of what was just learned.

import { api } from "./api.js";
import { $, h, clear, score } from "./dom.js";

const BATCH = 256; // texts per observe call: the most the server takes
const BATCH_BYTES = 512 * 1024; // and their UTF-8 (as MAX_BATCH_BYTES, serve/client/importing.py)
const IN_FLIGHT = 2; // the server encodes one batch while it learns the other

async function fileKey(bytes, name, options) {
  const tag = new TextEncoder().encode(`\u0000${name}\u0000${options}`);
  const all = new Uint8Array(bytes.byteLength + tag.length);
  all.set(new Uint8Array(bytes), 0);
  all.set(tag, bytes.byteLength);
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", all));
  return [...digest.slice(0, 12)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function batches(items) {
  const out = [];
  const utf8 = new TextEncoder();
  let bytes = 0;
  for (const item of items) {
    const last = out[out.length - 1];
    const cost = utf8.encode(item.text).length + 16;
    if (!last || last.length >= BATCH || last[0].domain !== item.domain || bytes + cost > BATCH_BYTES) {
      out.push([]);
      bytes = 0;
    }
    out[out.length - 1].push(item);
    bytes += cost;
  }
  return out;
}

function eta(seconds) {
  if (!Number.isFinite(seconds)) return "—";
  return seconds < 90 ? `${Math.ceil(seconds)} s` : `${Math.round(seconds / 60)} min`;
}

// Called by the actions panel (same signature as the other forms' handlers).
export async function onImport(form, memory, log) {
  const file = form.file.files[0];
  if (!file) throw new Error("Choose a file to import first.");
  const split = form.split.value;
  const bytes = await file.arrayBuffer();
  const domain = form.domain.value.trim();
  const parsed = await api.parseImport(file.name, bytes, { split, domain });
  // Everything that changes the texts sent or their domain: the same key for other batches
  // would be a request id the server already holds for another write (409, or worse, a
  // batch in flight behind it learned while this one is refused).
  const key = await fileKey(bytes, `${memory}\u0000${file.name}`, `${split}\u0000${domain}`);
  const groups = batches(parsed.items);
  const progress = $("import-progress");
  const status = $("import-status");
  progress.max = parsed.count;
  progress.value = 0;
  progress.hidden = false;
  const began = performance.now();
  let done = 0;
  let surprise = null;
  // The batch size is in the id: a batch cut another way is another write.
  const idOf = (index) => `ui${BATCH}-${key}-${String(index).padStart(6, "0")}`;
  const send = (index, ordered = true) => {
    const reply = api.observe(memory, {
      contexts: groups[index].map((item) => item.text), domain: groups[index][0].domain || undefined,
      request_id: idOf(index), after_request_id: ordered && index > 0 ? idOf(index - 1) : undefined,
    });
    reply.catch(() => {}); // awaited below, in order; a failure stops the import there
    return reply;
  };
  const sent = [];
  let next = 0;
  for (const [index, group] of groups.entries()) {
    while (next < groups.length && sent.length < IN_FLIGHT) sent.push(send(next++));
    let r;
    try {
      r = await sent.shift();
    } catch (err) {
      // its predecessor is acknowledged by now (replies are awaited in order): once more, alone
      if (err.code !== "out_of_order") throw err;
      r = await send(index, false);
    }
    done += group.length;
    surprise = surprise === null ? r.surprise : 0.8 * surprise + 0.2 * r.surprise;
    const rate = done / ((performance.now() - began) / 1000);
    progress.value = done;
    clear(status, `${done.toLocaleString("en")} / ${parsed.count.toLocaleString("en")} items · `
      + `${rate.toFixed(0)} items/s · ETA ${eta((parsed.count - done) / rate)} · surprise ${score(surprise)}`);
  }
  log(memory, `imported ${parsed.count.toLocaleString("en")} items from ${file.name}`);
  return h("p", { class: "takeaway" }, `Learned ${parsed.count.toLocaleString("en")} items from ${file.name} `
    + `in ${groups.length} batches.`);
}

// The REST client: the same /v1 calls any other client makes (DESIGN.md's contract table).
// The API key lives in sessionStorage so it is gone when the tab closes.

const KEY_STORE = "nmem.apiKey";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function getKey() {
  return sessionStorage.getItem(KEY_STORE) || "";
}

export function setKey(key) {
  if (key) sessionStorage.setItem(KEY_STORE, key);
  else sessionStorage.removeItem(KEY_STORE);
}

// FastAPI's own validation errors come as {"detail": [...]}; turn them into one sentence.
function describe(data, res) {
  const err = data && data.error;
  if (err && err.message) return err.message;
  if (data && Array.isArray(data.detail)) {
    return data.detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
  }
  if (data && typeof data.detail === "string") return data.detail;
  return `The server answered ${res.status} ${res.statusText}`.trim();
}

// A call the rate limit refused did nothing: wait as the server says and send it again, for up
// to this long in all (the key's budget is shared with the user's agents).
const RATE_LIMIT_WAIT_MS = 30000;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// `body`: an object sent as JSON, or an ArrayBuffer sent as it is (a file upload).
export async function request(method, path, body) {
  let waited = 0;
  for (;;) {
    try {
      return await requestOnce(method, path, body);
    } catch (exc) {
      const wait = exc instanceof ApiError && exc.code === "rate_limited" ? exc.retryAfterMs : null;
      if (wait === null || waited + wait > RATE_LIMIT_WAIT_MS) throw exc;
      await sleep(wait);
      waited += wait;
    }
  }
}

async function requestOnce(method, path, body) {
  const headers = { Accept: "application/json" };
  const key = getKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  const raw = body instanceof ArrayBuffer;
  if (body !== undefined) headers["Content-Type"] = raw ? "application/octet-stream" : "application/json";
  let res;
  try {
    res = await fetch(path, {
      method, headers, cache: "no-store",
      body: body === undefined ? undefined : raw ? body : JSON.stringify(body),
    });
  } catch (exc) {
    throw new ApiError(0, "network", "Cannot reach the server. Is it still running?");
  }
  const text = res.status === 204 ? "" : await res.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!res.ok) {
    const code = (data && data.error && data.error.code) || `http_${res.status}`;
    const error = new ApiError(res.status, code, describe(data, res));
    const seconds = Number(res.headers.get("Retry-After"));
    error.retryAfterMs = Number.isFinite(seconds) && seconds > 0 ? Math.min(seconds, 10) * 1000 : 1000;
    throw error;
  }
  return data;
}

const m = (name) => `/v1/memories/${encodeURIComponent(name)}`;

// Leave optional fields out rather than sending nulls the server would have to ignore.
function compact(obj) {
  return Object.fromEntries(Object.entries(obj).filter(([, v]) => v !== undefined && v !== "" && v !== null));
}

// A listing page: { cursor, limit, prefix } as query parameters (empty ones left out).
function page(path, opts = {}) {
  const query = new URLSearchParams(compact(opts)).toString();
  return request("GET", query ? `${path}?${query}` : path);
}

export const api = {
  listMemories: (opts) => page("/v1/memories", opts),
  createMemory: (name, config) => request("POST", "/v1/memories", compact({ name, config })),
  deleteMemory: (name) => request("DELETE", m(name)),
  observe: (name, body) => request("POST", `${m(name)}/observe`, compact(body)),
  infer: (name, body) => request("POST", `${m(name)}/infer`, compact(body)),
  surprise: (name, input) => request("POST", `${m(name)}/surprise`, { input }),
  consolidate: (name) => request("POST", `${m(name)}/consolidate`, {}),
  checkpoint: (name, body) => request("POST", `${m(name)}/checkpoints`, compact(body)),
  restore: (name, tag) => request("POST", `${m(name)}/restore`, { tag }),
  fork: (name, body) => request("POST", `${m(name)}/fork`, compact(body)),
  stats: (name) => request("GET", `${m(name)}/stats`),
  explain: (name, topK = 5) => request("GET", `${m(name)}/explain?top_k=${topK}`),
  history: (name, limit = 200) => request("GET", `${m(name)}/history?limit=${limit}`),
  lineage: (opts) => page("/v1/lineage", opts),
  parseImport: (filename, bytes, options) => request(
    "POST", `/v1/import/parse?${new URLSearchParams(compact({ filename, ...options }))}`, bytes),
};

// The Studio's link to the daemon: the token (sessionStorage only), calls to the /v1 API,
// streamed runs (Server-Sent Events over fetch: EventSource cannot send the token), and
// routing under the UI's root. Every URL is relative to the page's <base> (the UI root), so
// the Studio works under any path prefix a reverse proxy adds.
import { h } from "./vendor/preact.js";
import htm from "./vendor/htm.js";

export const html = htm.bind(h);
const TOKEN_KEY = "sandboxd.token";
export const uiRoot = new URL("./", document.baseURI);
export const apiRoot = new URL("../", uiRoot);

export const getToken = () => sessionStorage.getItem(TOKEN_KEY) || "";
export const setToken = (token) => sessionStorage.setItem(TOKEN_KEY, token);
export const clearToken = () => sessionStorage.removeItem(TOKEN_KEY);

export class ApiError extends Error {
  constructor(status, error) {
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || "http_error";
    this.field = error.field || null;
  }
}

export function apiUrl(path) {
  return new URL(path.replace(/^\/+/, ""), apiRoot);
}

function headers(extra) {
  return { Authorization: `Bearer ${getToken()}`, ...extra };
}

async function failure(resp) {
  let error = { message: `HTTP ${resp.status}` };
  try {
    const body = await resp.json();
    if (body && body.error) error = body.error;
  } catch (_) { /* not JSON: keep the status */ }
  return new ApiError(resp.status, error);
}

// A call of the API: the parsed JSON answer (null for 204), or an ApiError.
export async function api(method, path, { json, body, signal, type } = {}) {
  const init = { method, headers: headers(), signal, cache: "no-store" };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  } else if (body !== undefined) {
    init.body = body;
    init.headers["Content-Type"] = type || "application/octet-stream";
  }
  const resp = await fetch(apiUrl(path), init);
  if (!resp.ok) throw await failure(resp);
  if (resp.status === 204) return null;
  return resp.json();
}

export async function fetchBlob(path) {
  const resp = await fetch(apiUrl(path), { headers: headers(), cache: "no-store" });
  if (!resp.ok) throw await failure(resp);
  return resp.blob();
}

// Hand bytes to the browser as a download (never shown inline: no HTML is ever rendered).
export function saveBlob(blob, filename) {
  const url = URL.createObjectURL(new Blob([blob], { type: "application/octet-stream" }));
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

export async function download(path, filename) {
  saveBlob(await fetchBlob(path), filename);
}

// POST a run with Accept: text/event-stream; onEvent gets each event ({event, run_id, data,
// result, error}). Resolves when the stream ends. A 4xx before the stream is an ApiError.
export function streamRun(path, request, onEvent, signal) {
  return streamEvents(path, { method: "POST", body: JSON.stringify(request) }, onEvent, signal);
}

// GET /v1/runs/{id}/events: the events of a run started elsewhere, live while it runs.
export function followRun(id, onEvent, signal) {
  return streamEvents(`v1/runs/${encodeURIComponent(id)}/events`, { method: "GET" }, onEvent, signal);
}

async function streamEvents(path, init, onEvent, signal) {
  const resp = await fetch(apiUrl(path), {
    ...init,
    headers: headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
    signal,
  });
  if (!resp.ok) throw await failure(resp);
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5)).join("\n");
      if (data) onEvent(JSON.parse(data));
    }
  }
}

// -- routing: paths are relative to the UI root ("", "runs/run_…", "solves", …) --------------
const listeners = new Set();
export function currentPath() {
  const here = window.location.pathname;
  return here.startsWith(uiRoot.pathname) ? decodeURI(here.slice(uiRoot.pathname.length)) : "";
}
export function href(path) {
  return new URL(path, uiRoot).href;
}
export function navigate(path) {
  window.history.pushState(null, "", href(path));
  listeners.forEach((fn) => fn());
}
export function onNavigate(fn) {
  listeners.add(fn);
  window.addEventListener("popstate", fn);
  return () => { listeners.delete(fn); window.removeEventListener("popstate", fn); };
}

const ID = { run: /^run_[0-9a-f]{16}$/, sbx: /^sbx_[0-9a-f]{16}$/, slv: /^slv_[0-9a-f]{16}$/ };
// The Studio page of a daemon object id, or null (ids in audit records may be anything).
export function pageOf(id) {
  if (typeof id !== "string") return null;
  if (ID.run.test(id)) return `runs/${id}`;
  if (ID.sbx.test(id)) return `sandboxes/${id}`;
  if (ID.slv.test(id)) return `solves/${id}`;
  return null;
}

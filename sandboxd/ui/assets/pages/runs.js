// Runs: the list (newest first, filters, pages) and one run (output, limits and usage, which
// limit fired, network decisions, files, the commands that reproduce it, cancel).
import { useEffect, useState } from "../vendor/hooks.js";
import { api, followRun, html, navigate, saveBlob } from "../api.js";
import {
  Copy, ErrorBox, KV, Link, Output, Status, cliCommand, curlCommand, limitInWords, pythonSnippet,
  seconds, usePoll, when,
} from "../components.js";

const STATUSES = ["", "running", "ok", "failed", "timeout", "cpu_limit", "memory_limit", "output_limit", "killed", "cancelled", "error", "interrupted"];
const LANGUAGES = ["", "python", "bash", "node"];

function Select({ label, value, options, onChange }) {
  return html`<label>${label} <select value=${value} onChange=${(e) => onChange(e.target.value)}>
    ${options.map((o) => html`<option value=${o}>${o || "any"}</option>`)}
  </select></label>`;
}

export function RunsPage() {
  const [filters, setFilters] = useState({ status: "", language: "", backend: "", tenant: "" });
  const [cursors, setCursors] = useState([]); // the `after` of each page shown before this one
  const after = cursors[cursors.length - 1] || "";
  const query = new URLSearchParams({ limit: "25" });
  for (const [k, v] of Object.entries(filters)) if (v) query.set(k, v);
  if (after) query.set("after", after);
  const [page, error] = usePoll(() => api("GET", `v1/runs?${query}`), after ? 0 : 2000, [query.toString()]);
  const set = (k) => (v) => { setCursors([]); setFilters({ ...filters, [k]: v }); };
  return html`<section>
    <h1>Runs</h1>
    <form class="filters" onSubmit=${(e) => e.preventDefault()}>
      <${Select} label="status" value=${filters.status} options=${STATUSES} onChange=${set("status")} />
      <${Select} label="language" value=${filters.language} options=${LANGUAGES} onChange=${set("language")} />
      <label>backend <input value=${filters.backend} placeholder="any" size="8" onChange=${(e) => set("backend")(e.target.value.trim())} /></label>
      <label>tenant <input value=${filters.tenant} placeholder="admin: any" size="10" onChange=${(e) => set("tenant")(e.target.value.trim())} /></label>
    </form>
    <${ErrorBox} error=${error} />
    ${page && html`<table class="list runs">
      <thead><tr><th>run</th><th>status</th><th>language</th><th>backend</th><th>exit</th><th>wall time</th><th>started</th><th>tenant</th></tr></thead>
      <tbody>${page.runs.map((r) => html`<tr>
        <td><${Link} to=${`runs/${r.id}`}>${r.id}</${Link}></td>
        <td><${Status} status=${r.status} /></td><td>${r.language}</td><td>${r.backend}</td>
        <td>${r.exit_code}</td><td>${seconds(r.wall_time_s)}</td><td>${when(r.created_at)}</td><td>${r.tenant}</td>
      </tr>`)}</tbody>
    </table>
    ${page.runs.length === 0 ? html`<p class="empty">No runs match.</p>` : null}
    <div class="pager">
      ${cursors.length ? html`<button type="button" onClick=${() => setCursors(cursors.slice(0, -1))}>← newer</button>` : null}
      ${page.next_after ? html`<button type="button" onClick=${() => setCursors([...cursors, page.next_after])}>older →</button>` : null}
    </div>`}
  </section>`;
}

// What the daemon kept of a request, as a request to send again (its code is not kept: only
// its hash, so the snippet has a placeholder for it).
function replayable(record) {
  const digest = record.request || {};
  const result = record.result || {};
  const req = { language: digest.language || "python", code: "# the program (the daemon keeps only its sha256)\n" };
  if (result.limits) req.limits = result.limits;
  if (digest.network && digest.network.mode !== "none") req.network = digest.network;
  if (digest.env_names && digest.env_names.length) req.env = Object.fromEntries(digest.env_names.map((n) => [n, "…"]));
  if (result.backend) req.backend = result.backend;
  return req;
}

function Connections({ title, rows }) {
  if (!rows || !rows.length) return null;
  return html`<h3>${title}</h3><table class="list"><thead><tr><th>host</th><th>port</th><th>reason</th><th>bytes up</th><th>bytes down</th></tr></thead>
    <tbody>${rows.map((c) => html`<tr><td>${c.host}</td><td>${c.port}</td><td>${c.reason}</td><td>${c.bytes_up}</td><td>${c.bytes_down}</td></tr>`)}</tbody></table>`;
}

function decode(b64) {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return bytes;
}

// A run's result: used by the run page, the playground and a sandbox's "run in it".
export function ResultView({ result }) {
  if (!result) return null;
  const fired = limitInWords(result);
  const l = result.limits || {};
  const u = result.usage || {};
  return html`<div class="result">
    <p><${Status} status=${result.status} /> ${result.exit_code !== null && result.exit_code !== undefined ? `exit ${result.exit_code}` : ""} ${result.signal || ""}</p>
    ${fired ? html`<p class="fired">${fired}</p>` : null}
    ${result.message ? html`<p class="message">${result.message}</p>` : null}
    <${Output} label="stdout" text=${result.stdout} truncated=${result.stdout_truncated} />
    <${Output} label="stderr" text=${result.stderr} truncated=${result.stderr_truncated} />
    <h3>Limits and usage</h3>
    <table class="list"><thead><tr><th>measure</th><th>limit</th><th>used</th></tr></thead><tbody>
      <tr><td>wall time</td><td>${l.wall_time_s} s</td><td>${seconds(u.wall_time_s)}</td></tr>
      <tr><td>cpu time</td><td>${l.cpu_time_s} s</td><td>${seconds(u.cpu_time_s)}</td></tr>
      <tr><td>memory</td><td>${l.memory_mib} MiB</td><td>${u.peak_memory_mib} MiB peak</td></tr>
      <tr><td>processes</td><td>${l.pids}</td><td></td></tr>
      <tr><td>output per stream</td><td>${l.output_bytes} bytes</td><td></td></tr>
      <tr><td>file size</td><td>${l.file_size_mib} MiB</td><td></td></tr>
      <tr><td>disk</td><td>${l.disk_mib} MiB</td><td></td></tr>
    </tbody></table>
    ${result.network ? html`<h3>Network</h3>
      <${Connections} title="allowed" rows=${result.network.allowed} />
      <${Connections} title="denied" rows=${result.network.denied} />
      ${!result.network.allowed.length && !result.network.denied.length ? html`<p class="empty">No connection was tried.</p>` : null}` : null}
    ${result.files && result.files.length ? html`<h3>Collected files</h3><ul class="files">
      ${result.files.map((f) => html`<li><span class="path">${f.path}</span> (${f.size} bytes)
        <button type="button" onClick=${() => saveBlob(decode(f.content), f.path.split("/").pop())}>download</button></li>`)}
    </ul>` : null}
  </div>`;
}

export function RunPage({ id }) {
  const [cancelError, setCancelError] = useState(null);
  const [record, error, reload] = usePoll(() => api("GET", `v1/runs/${encodeURIComponent(id)}`), 1000, [id], (r) => !r || r.status === "running");
  const [live, setLive] = useState(null); // output of a running run, as it comes
  const running = record && record.status === "running";
  useEffect(() => {
    if (!running) return undefined;
    const abort = new AbortController();
    const state = { stdout: "", stderr: "" };
    followRun(id, (ev) => {
      if (ev.event === "stdout" || ev.event === "stderr") { state[ev.event] += ev.data || ""; setLive({ ...state }); }
    }, abort.signal).then(() => reload(), () => {});
    return () => abort.abort();
  }, [id, running]);
  const cancel = async () => {
    try { await api("DELETE", `v1/runs/${encodeURIComponent(id)}`); setCancelError(null); reload(); } catch (e) { setCancelError(e); }
  };
  if (error) return html`<section><h1>Run ${id}</h1><${ErrorBox} error=${error} /></section>`;
  if (!record) return html`<section><h1>Run ${id}</h1><p>loading…</p></section>`;
  const req = replayable(record);
  const path = record.sandbox_id ? `v1/sandboxes/${record.sandbox_id}/runs` : "v1/runs";
  return html`<section>
    <h1>Run <span class="id">${record.id}</span></h1>
    <${KV} rows=${[
      ["status", html`<${Status} status=${record.status} />`],
      ["started", when(record.created_at)],
      ["finished", when(record.finished_at)],
      ["trace id", html`<code>${record.trace_id}</code>`],
      record.sandbox_id && ["sandbox", html`<${Link} to=${`sandboxes/${record.sandbox_id}`}>${record.sandbox_id}</${Link}>`],
      ["language", (record.request || {}).language],
      ["env names", ((record.request || {}).env_names || []).join(", ")],
    ]} />
    ${running ? html`<p><span class="status status-running">running</span> (its output follows live)
      <button type="button" class="danger" onClick=${cancel}>Cancel run</button></p>
      <div class="live"><${Output} label="stdout" text=${live ? live.stdout : ""} /><${Output} label="stderr" text=${live ? live.stderr : ""} /></div>` : null}
    <${ErrorBox} error=${cancelError} />
    <${ResultView} result=${record.result} />
    <h3>Reproduce it</h3>
    <p class="hint">The daemon keeps a hash of the program, not the program: put it in place of the placeholder.</p>
    <${Copy} label="curl" text=${curlCommand(path, req)} />
    <${Copy} label="sandboxd run" text=${cliCommand(req)} />
    <${Copy} label="Python client" text=${pythonSnippet(req, record.sandbox_id)} />
    <p><button type="button" onClick=${() => navigate("playground")}>Open the playground</button></p>
  </section>`;
}

// Pieces every page uses. Everything shown comes from runs, files or models, so it goes into
// the page as text (Preact text nodes, attribute values): never as HTML.
import { useEffect, useRef, useState } from "./vendor/hooks.js";
import { apiRoot, href, html, navigate } from "./api.js";

export function Link({ to, children, ...rest }) {
  const go = (e) => {
    if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey) return;
    e.preventDefault();
    navigate(to);
  };
  return html`<a href=${href(to)} onClick=${go} ...${rest}>${children}</a>`;
}

export function Status({ status }) {
  return html`<span class=${`status status-${String(status).replace(/[^a-z_]/g, "")}`}>${status}</span>`;
}

export function ErrorBox({ error }) {
  if (!error) return null;
  const where = error.field ? ` (field: ${error.field})` : "";
  return html`<p class="error" role="alert">${error.code ? `${error.code}: ` : ""}${error.message}${where}</p>`;
}

export function Output({ label, text, truncated }) {
  return html`<div class="output">
    <div class="output-label">${label}${truncated ? " (cut at the output limit)" : ""}</div>
    <pre class=${`stream stream-${label}`}>${text || ""}</pre>
  </div>`;
}

export function KV({ rows }) {
  return html`<table class="kv"><tbody>
    ${rows.filter(Boolean).map(([k, v]) => html`<tr><th>${k}</th><td>${v}</td></tr>`)}
  </tbody></table>`;
}

export function Copy({ label, text }) {
  const [done, setDone] = useState(false);
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(text);
      setDone(true);
      setTimeout(() => setDone(false), 1500);
    } catch (_) { setDone(false); }
  };
  return html`<div class="copy">
    <div class="copy-head"><span>${label}</span><button type="button" onClick=${copy}>${done ? "copied" : "copy"}</button></div>
    <pre class="snippet">${text}</pre>
  </div>`;
}

export const when = (iso) => (iso ? new Date(iso).toLocaleString() : "");
export const seconds = (s) => (s === null || s === undefined ? "" : `${Number(s).toFixed(3)} s`);

// Which limit ended a run, in words (README "What a run gets").
export function limitInWords(result) {
  if (!result) return null;
  const l = result.limits || {};
  const words = {
    timeout: `Wall-clock limit: it ran longer than ${l.wall_time_s} s and was killed.`,
    cpu_limit: `CPU limit: the process tree used more than ${l.cpu_time_s} s of CPU time.`,
    memory_limit: `Memory limit: the process tree needed more than ${l.memory_mib} MiB.`,
    output_limit: `Output limit: it printed more than ${l.output_bytes} bytes on one stream.`,
    killed: `Killed by a signal${result.signal ? ` (${result.signal})` : ""}.`,
    cancelled: "Cancelled before it finished.",
    error: "The sandbox could not be built; nothing ran.",
  }[result.status];
  const pids = /fork|pids|process/i.test(result.message || "") ? ` Process limit: forks were refused beyond ${l.pids}.` : "";
  return (words || "") + pids || null;
}

// Poll `load` every `ms` while `active()` says so; returns [data, error, reload].
export function usePoll(load, ms, deps, active = () => true) {
  const [data, setData] = useState(null);
  const [error, setError] = useState(null);
  const live = useRef(true);
  const tick = useRef(0);
  const reload = async () => {
    const mine = ++tick.current;
    try {
      const got = await load();
      if (live.current && mine === tick.current) { setData(got); setError(null); }
      return got;
    } catch (e) {
      if (live.current && mine === tick.current) setError(e);
      return null;
    }
  };
  useEffect(() => {
    live.current = true;
    let timer = null;
    const loop = async () => {
      const got = await reload();
      if (live.current && ms && active(got)) timer = setTimeout(loop, ms);
    };
    loop();
    return () => { live.current = false; clearTimeout(timer); };
  }, deps);
  return [data, error, reload];
}

// -- the equivalent request, for the user to copy (the token stays in $SANDBOXD_TOKEN) -------
const shellQuote = (s) => `'${String(s).replace(/'/g, "'\\''")}'`;
export const daemonUrl = () => apiRoot.href.replace(/\/$/, "");

export function curlCommand(path, request) {
  return [
    `curl -s ${shellQuote(`${daemonUrl()}/${path}`)} \\`,
    `  -H "Authorization: Bearer $SANDBOXD_TOKEN" -H 'content-type: application/json' \\`,
    `  -d ${shellQuote(JSON.stringify(request))}`,
  ].join("\n");
}

function py(value, indent = "") {
  if (value === null || value === undefined) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value === "number") return String(value);
  if (typeof value === "string") return JSON.stringify(value);
  const inner = indent + "    ";
  if (Array.isArray(value)) return `[${value.map((v) => py(v, inner)).join(", ")}]`;
  const items = Object.entries(value).map(([k, v]) => `${inner}${JSON.stringify(k)}: ${py(v, inner)},`);
  return items.length ? `{\n${items.join("\n")}\n${indent}}` : "{}";
}

export function pythonSnippet(request, sandboxId) {
  const call = sandboxId ? `c.run_in_sandbox(${JSON.stringify(sandboxId)}, **request)` : "c.run(**request)";
  return [
    "import os",
    "from sandboxd.client import SyncClient",
    "",
    `request = ${py(request)}`,
    `with SyncClient(${JSON.stringify(daemonUrl())}, token=os.environ["SANDBOXD_TOKEN"]) as c:`,
    `    r = ${call}`,
    "    print(r.status, r.stdout, r.stderr)",
  ].join("\n");
}

const MAIN = { python: "main.py", bash: "main.sh", node: "main.js" };
export function cliCommand(request) {
  const lang = request.language || "python";
  const file = MAIN[lang];
  const args = [`sandboxd run ${file} --language ${lang}`, `--url ${shellQuote(daemonUrl())}`];
  const l = request.limits || {};
  if (l.wall_time_s) args.push(`--timeout ${l.wall_time_s}`);
  if (l.memory_mib) args.push(`--memory ${l.memory_mib}`);
  for (const [k, v] of Object.entries(request.env || {})) args.push(`--env ${shellQuote(`${k}=${v}`)}`);
  const code = request.code || "";
  let fence = "SANDBOXD_EOF";
  while (code.includes(fence)) fence += "_";
  return `cat > ${file} <<'${fence}'\n${code}${code.endsWith("\n") ? "" : "\n"}${fence}\n${args.join(" ")}`;
}

// -- charts: plain SVG drawn by Preact -------------------------------------------------------
export function Bars({ values, labels, height = 120, title }) {
  const max = Math.max(1, ...values);
  const w = 100 / Math.max(1, values.length);
  return html`<figure class="chart">
    <figcaption>${title}</figcaption>
    <svg viewBox=${`0 0 100 ${height}`} preserveAspectRatio="none" role="img" aria-label=${title}>
      ${values.map((v, i) => {
        const hgt = (v / max) * (height - 4);
        return html`<rect class="bar" x=${i * w + w * 0.1} y=${height - hgt} width=${w * 0.8} height=${hgt}>
          <title>${labels ? `${labels[i]}: ${v}` : String(v)}</title></rect>`;
      })}
    </svg>
    ${labels && labels.length <= 12 ? html`<div class="bar-labels">${labels.map((l, i) => html`<span>${l} (${values[i]})</span>`)}</div>` : null}
  </figure>`;
}

export function Meter({ value, max, label }) {
  const pct = max > 0 ? Math.min(100, (value / max) * 100) : 0;
  return html`<div class="meter" title=${label}>
    <svg viewBox="0 0 100 6" preserveAspectRatio="none"><rect class="meter-bg" x="0" y="0" width="100" height="6" /><rect class="meter-fg" x="0" y="0" width=${pct} height="6" /></svg>
    <span>${label}</span>
  </div>`;
}

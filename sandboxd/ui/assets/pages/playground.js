// Playground: write a program, set its limits, network, env and stdin, run it with live
// output, and see the same request as curl, `sandboxd run` and the Python client.
import { useRef, useState } from "../vendor/hooks.js";
import { api, html, streamRun } from "../api.js";
import { Copy, ErrorBox, Link, Output, cliCommand, curlCommand, pythonSnippet } from "../components.js";
import { ResultView } from "./runs.js";

const SAMPLES = {
  python: 'import time\nfor i in range(5):\n    print("tick", i, flush=True)\n    time.sleep(0.3)\n',
  bash: 'for i in 1 2 3; do echo "tick $i"; sleep 0.3; done\n',
  node: 'let i = 0;\nconst t = setInterval(() => { console.log("tick", i++); if (i === 3) clearInterval(t); }, 300);\n',
};

// The request the form describes (only what differs from the daemon's defaults).
export function buildRequest(form) {
  const req = { language: form.language, code: form.code };
  if (form.stdin) req.stdin = form.stdin;
  const env = {};
  for (const line of form.env.split("\n")) {
    const at = line.indexOf("=");
    if (at > 0) env[line.slice(0, at).trim()] = line.slice(at + 1);
  }
  if (Object.keys(env).length) req.env = env;
  const limits = {};
  for (const k of ["wall_time_s", "cpu_time_s", "memory_mib", "output_bytes"]) {
    if (form[k] !== "") limits[k] = Number(form[k]);
  }
  if (Object.keys(limits).length) req.limits = limits;
  const rules = form.allow.split(/[\s,]+/).filter(Boolean);
  if (rules.length) req.network = { mode: "allowlist", allow: rules };
  if (form.backend) req.backend = form.backend;
  return req;
}

// Runs `request` at `path` with live output; shared by the playground and a sandbox's page.
export function useLiveRun(path) {
  const [live, setLive] = useState(null); // {runId, stdout, stderr, result, error}
  const abort = useRef(null);
  const start = async (request) => {
    const state = { runId: null, stdout: "", stderr: "", result: null, error: null, running: true };
    setLive({ ...state });
    abort.current = new AbortController();
    try {
      await streamRun(path, request, (ev) => {
        if (ev.event === "start") state.runId = ev.run_id;
        else if (ev.event === "stdout" || ev.event === "stderr") state[ev.event] += ev.data || "";
        else if (ev.event === "exit") state.result = ev.result;
        else if (ev.event === "error") state.error = ev.error;
        setLive({ ...state });
      }, abort.current.signal);
    } catch (e) {
      state.error = e;
    }
    state.running = false;
    setLive({ ...state });
  };
  const cancel = async () => {
    if (live && live.runId) {
      try { await api("DELETE", `v1/runs/${live.runId}`); } catch (e) { setLive({ ...live, error: e }); }
    }
  };
  return [live, start, cancel];
}

export function LiveRun({ live, onCancel }) {
  if (!live) return null;
  return html`<div class="live">
    <p>${live.runId ? html`run <${Link} to=${`runs/${live.runId}`}>${live.runId}</${Link}>` : "starting…"}
      ${live.running ? html` <span class="status status-running">running</span>
        <button type="button" class="danger" onClick=${onCancel} disabled=${!live.runId}>Cancel</button>` : null}</p>
    <${ErrorBox} error=${live.error} />
    ${live.result ? html`<${ResultView} result=${live.result} />` : html`
      <${Output} label="stdout" text=${live.stdout} />
      <${Output} label="stderr" text=${live.stderr} />`}
  </div>`;
}

export function PlaygroundPage() {
  const [form, setForm] = useState({
    language: "python", code: SAMPLES.python, stdin: "", env: "", allow: "", backend: "",
    wall_time_s: "10", cpu_time_s: "", memory_mib: "256", output_bytes: "",
  });
  const [live, start, cancel] = useLiveRun("v1/runs");
  const field = (k) => (e) => setForm({ ...form, [k]: e.target.value });
  const language = (e) => {
    const lang = e.target.value;
    const sample = Object.values(SAMPLES).includes(form.code) || !form.code;
    setForm({ ...form, language: lang, code: sample ? SAMPLES[lang] : form.code });
  };
  const request = buildRequest(form);
  const run = (e) => { e.preventDefault(); start(request); };
  return html`<section class="playground">
    <h1>Playground</h1>
    <div class="split">
      <form class="editor" onSubmit=${run}>
        <div class="row">
          <label>language <select name="language" value=${form.language} onChange=${language}>
            <option>python</option><option>bash</option><option>node</option></select></label>
          <label>backend <input name="backend" value=${form.backend} placeholder="default" size="8" onInput=${field("backend")} /></label>
        </div>
        <label class="block">code <textarea name="code" class="code" rows="14" spellcheck="false" value=${form.code} onInput=${field("code")}></textarea></label>
        <div class="row">
          <label>wall time s <input name="wall_time_s" value=${form.wall_time_s} size="5" onInput=${field("wall_time_s")} /></label>
          <label>cpu s <input name="cpu_time_s" value=${form.cpu_time_s} size="5" placeholder="10" onInput=${field("cpu_time_s")} /></label>
          <label>memory MiB <input name="memory_mib" value=${form.memory_mib} size="5" onInput=${field("memory_mib")} /></label>
          <label>output bytes <input name="output_bytes" value=${form.output_bytes} size="8" placeholder="1048576" onInput=${field("output_bytes")} /></label>
        </div>
        <label class="block">network allowlist (empty: no network) <input name="allow" value=${form.allow} placeholder="example.com *.example.org:443" onInput=${field("allow")} /></label>
        <label class="block">env (KEY=VALUE, one a line) <textarea name="env" rows="2" value=${form.env} onInput=${field("env")}></textarea></label>
        <label class="block">stdin <textarea name="stdin" rows="2" value=${form.stdin} onInput=${field("stdin")}></textarea></label>
        <p><button type="submit" class="primary" disabled=${live && live.running}>Run</button></p>
      </form>
      <div class="snippets">
        <${Copy} label="curl" text=${curlCommand("v1/runs", request)} />
        <${Copy} label="sandboxd run" text=${cliCommand(request)} />
        <${Copy} label="Python client" text=${pythonSnippet(request)} />
      </div>
    </div>
    <${LiveRun} live=${live} onCancel=${cancel} />
  </section>`;
}

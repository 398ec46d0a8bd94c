// Solves: what coder reported of each `coder solve`: rounds as a timeline (the writer's edits
// as a diff, the tests before and after, the reviewer's verdict), tokens and cost per role,
// budgets, how it stopped, and the final patch to download. Live while the solve runs.
import { api, html, saveBlob } from "../api.js";
import { ErrorBox, KV, Link, Status, seconds, usePoll, when } from "../components.js";

export function SolvesPage() {
  const [list, error] = usePoll(() => api("GET", "v1/solves?limit=100"), 3000, []);
  return html`<section>
    <h1>Solves</h1>
    <p class="hint">Each <code>coder solve</code> that uses this daemon reports itself here.</p>
    <${ErrorBox} error=${error} />
    ${list && html`<table class="list"><thead><tr><th>solve</th><th>repository</th><th>status</th><th>task</th><th>events</th><th>started</th></tr></thead>
      <tbody>${list.solves.map((s) => html`<tr>
        <td><${Link} to=${`solves/${s.id}`}>${s.id}</${Link}></td><td>${s.repo}</td><td><${Status} status=${s.status} /></td>
        <td class="task">${s.task}</td><td>${s.events}</td><td>${when(s.created_at)}</td></tr>`)}</tbody></table>
      ${list.solves.length === 0 ? html`<p class="empty">No solves yet.</p>` : null}`}
  </section>`;
}

function Diff({ text }) {
  if (!text) return html`<p class="empty">No change.</p>`;
  const kind = (line) => (line.startsWith("+++") || line.startsWith("---") ? "meta" : line[0] === "+" ? "add" : line[0] === "-" ? "del" : line.startsWith("@@") ? "hunk" : "ctx");
  return html`<pre class="diff">${text.split("\n").map((line) => html`<span class=${`diff-${kind(line)}`}>${line || " "}</span>`)}</pre>`;
}

function Tests({ t, label }) {
  return html`<div class=${`tests ${t.passed ? "tests-pass" : "tests-fail"}`}>
    <div><strong>${label}</strong>: ${t.passed ? "passing" : `failing${t.exit_code !== null && t.exit_code !== undefined ? ` (exit ${t.exit_code})` : ""}`} ${t.summary ? `— ${t.summary}` : ""}</div>
    ${t.failing && t.failing.length ? html`<ul class="failing">${t.failing.map((f) => html`<li><code>${f}</code></li>`)}</ul>` : null}
  </div>`;
}

function rounds(timeline) {
  const byRound = new Map();
  let end = null;
  const notes = [];
  for (const { event } of timeline) {
    if (event.kind === "end") { end = event; continue; }
    if (event.kind === "note") { notes.push(event); continue; }
    if (!byRound.has(event.round)) byRound.set(event.round, []);
    byRound.get(event.round).push(event);
  }
  return { rounds: [...byRound.entries()].sort((a, b) => a[0] - b[0]), end, notes };
}

function usageByRole(timeline, end) {
  if (end && end.usage && Object.keys(end.usage).length) return end.usage;
  const out = {};
  for (const { event } of timeline) {
    if (event.kind !== "model") continue;
    const u = out[event.role] || (out[event.role] = { calls: 0, prompt_tokens: 0, completion_tokens: 0, cost_usd: 0 });
    u.calls += 1;
    u.prompt_tokens += event.usage.prompt_tokens;
    u.completion_tokens += event.usage.completion_tokens;
    u.cost_usd += event.usage.cost_usd;
  }
  return out;
}

function Round({ n, events }) {
  if (n === 0) {
    const tests = events.find((e) => e.kind === "tests");
    return html`<li class="round" data-round="0"><h3>Before any edit</h3>${tests ? html`<${Tests} t=${tests} label="tests" />` : null}</li>`;
  }
  const tests = events.filter((e) => e.kind === "tests");
  const after = tests[tests.length - 1];
  return html`<li class="round" data-round=${n}>
    <h3>Round ${n}</h3>
    <div class="round-grid">
      <div class="writer">
        ${events.filter((e) => e.kind === "model").map((m) => html`<p class="call">${m.role}: ${m.model} — ${m.usage.prompt_tokens + m.usage.completion_tokens} tokens, $${m.usage.cost_usd.toFixed(4)}${m.cached ? " (cached)" : ""}</p>`)}
        ${events.filter((e) => e.kind === "edits").map((e) => html`<p class="edits">edited: ${e.files.length ? e.files.join(", ") : "nothing"}${e.not_applied ? ` (${e.not_applied} blocks not applied)` : ""}</p>`)}
        ${after && after.patch ? html`<details open><summary>the change tested in this round</summary><${Diff} text=${after.patch} /></details>` : null}
      </div>
      <div class="verdicts">
        ${after ? html`<${Tests} t=${after} label="tests after" />` : html`<p class="empty">no test run</p>`}
        ${events.filter((e) => e.kind === "review").map((r) => html`<div class=${`verdict verdict-${r.verdict}`}>
          <strong>reviewer: ${r.verdict}</strong>${r.points.length ? html`<ul>${r.points.map((p) => html`<li>${p}</li>`)}</ul>` : null}</div>`)}
      </div>
    </div>
  </li>`;
}

// The sandbox runs of a solve: they carry its trace id.
function SolveRuns({ traceId, live }) {
  const [page, error] = usePoll(() => api("GET", `v1/runs?trace_id=${traceId}&limit=100`), live ? 3000 : 0, [traceId, live]);
  if (error) return html`<${ErrorBox} error=${error} />`;
  if (!page) return null;
  return html`<table class="list solve-runs"><thead><tr><th>run</th><th>status</th><th>exit</th><th>wall time</th><th>started</th></tr></thead>
    <tbody>${page.runs.map((r) => html`<tr><td><${Link} to=${`runs/${r.id}`}>${r.id}</${Link}></td><td><${Status} status=${r.status} /></td>
      <td>${r.exit_code}</td><td>${seconds(r.wall_time_s)}</td><td>${when(r.created_at)}</td></tr>`)}</tbody></table>`;
}

export function SolvePage({ id }) {
  const [solve, error] = usePoll(() => api("GET", `v1/solves/${encodeURIComponent(id)}`), 1000, [id], (s) => !s || s.status === "running");
  if (error) return html`<section><h1>Solve ${id}</h1><${ErrorBox} error=${error} /></section>`;
  if (!solve) return html`<section><h1>Solve ${id}</h1><p>loading…</p></section>`;
  const { rounds: list, end, notes } = rounds(solve.timeline);
  const usage = usageByRole(solve.timeline, end);
  const sandbox = notes.find((n) => n.sandbox_id);
  const patch = end ? end.patch : null;
  return html`<section class="solve">
    <h1>Solve <span class="id">${solve.id}</span> <${Status} status=${solve.status} /></h1>
    <${KV} rows=${[
      ["task", solve.task], ["repository", solve.repo], ["test command", html`<code>${solve.test_command}</code>`],
      ["models", Object.entries(solve.models).map(([r, m]) => `${r}: ${m}`).join(", ")],
      ["budgets", Object.entries(solve.budgets).map(([k, v]) => `${k} ${v}`).join(", ")],
      ["trace id", html`<code>${solve.trace_id || ""}</code>`],
      sandbox && ["sandbox", html`<${Link} to=${`sandboxes/${sandbox.sandbox_id}`}>${sandbox.sandbox_id}</${Link}>`],
      ["started", when(solve.created_at)],
      end && ["stopped", `${end.status}${end.reason ? `: ${end.reason}` : ""} after ${end.rounds} rounds, ${end.wall_time_s.toFixed(1)} s`],
    ]} />
    <h2>Tokens and cost</h2>
    <table class="list"><thead><tr><th>role</th><th>calls</th><th>prompt tokens</th><th>completion tokens</th><th>cost</th></tr></thead><tbody>
      ${Object.entries(usage).map(([role, u]) => html`<tr><td>${role}</td><td>${u.calls}</td><td>${u.prompt_tokens}</td><td>${u.completion_tokens}</td><td>$${u.cost_usd.toFixed(4)}</td></tr>`)}
    </tbody></table>
    ${notes.filter((n) => !n.sandbox_id).map((n) => html`<p class="message">${n.text}</p>`)}
    <h2>Rounds</h2>
    <ol class="timeline">${list.map(([n, events]) => html`<${Round} n=${n} events=${events} />`)}</ol>
    ${solve.status === "running" ? html`<p class="status status-running">running… (this page follows it)</p>` : null}
    ${solve.trace_id ? html`<h2>Its sandbox runs (trace ${solve.trace_id})</h2><${SolveRuns} traceId=${solve.trace_id} live=${solve.status === "running"} />` : null}
    ${end ? html`<h2>Final patch</h2>
      <p><button type="button" class="primary" disabled=${!patch} onClick=${() => saveBlob(new TextEncoder().encode(patch), `${solve.id}.patch`)}>Download patch</button></p>
      <${Diff} text=${patch} />` : null}
  </section>`;
}

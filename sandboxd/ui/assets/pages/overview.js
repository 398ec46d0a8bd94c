// Overview: runs active and queued, the warm pools, the last hour of runs by status and by
// minute, p50/p90 run latency and requests refused, from GET /v1/stats.
import { api, html } from "../api.js";
import { Bars, ErrorBox, Meter, seconds, usePoll } from "../components.js";

export function OverviewPage() {
  const [stats, error] = usePoll(() => api("GET", "v1/stats"), 2000, []);
  if (error && error.status === 403) {
    return html`<section><h1>Overview</h1><p class="error forbidden">This token cannot read the daemon's figures: it needs the metrics scope.</p></section>`;
  }
  if (!stats) return html`<section><h1>Overview</h1><${ErrorBox} error=${error} /><p>loading…</p></section>`;
  const statuses = Object.keys(stats.runs_last_hour).sort();
  const rejected = Object.entries(stats.rejected).sort((a, b) => b[1] - a[1]);
  return html`<section>
    <h1>Overview</h1>
    <div class="cards">
      <div class="card"><div class="big">${stats.active_runs}</div>runs active</div>
      <div class="card"><div class="big">${stats.queued_runs}</div>queued</div>
      <div class="card"><div class="big">${seconds(stats.latency_p50_s) || "–"}</div>p50 run time (1 h)</div>
      <div class="card"><div class="big">${seconds(stats.latency_p90_s) || "–"}</div>p90 run time (1 h)</div>
      <div class="card"><div class="big">${rejected.reduce((n, [, v]) => n + v, 0)}</div>requests refused</div>
    </div>
    <div class="split">
      <${Bars} title="runs started per minute, last hour" values=${stats.runs_per_minute} labels=${stats.runs_per_minute.map((_, i) => `${60 - i} min ago`)} />
      <${Bars} title="runs by status, last hour" values=${statuses.map((s) => stats.runs_last_hour[s])} labels=${statuses} />
    </div>
    <h2>Warm pools</h2>
    <table class="list"><thead><tr><th>pool</th><th>ready of target</th><th>preparing</th><th>hits</th><th>misses</th><th>failures</th></tr></thead><tbody>
      ${Object.entries(stats.warm_pools).map(([name, p]) => html`<tr><td>${name}</td>
        <td><${Meter} value=${p.ready} max=${Math.max(p.target, 1)} label=${`${p.ready} / ${p.target}`} /></td>
        <td>${p.preparing}</td><td>${p.hits}</td><td>${p.misses}</td><td>${p.failures}</td></tr>`)}
    </tbody></table>
    <h2>Requests refused, by error code</h2>
    ${rejected.length ? html`<table class="list"><tbody>${rejected.map(([code, n]) => html`<tr><td>${code}</td><td>${n}</td></tr>`)}</tbody></table>` : html`<p class="empty">None.</p>`}
  </section>`;
}

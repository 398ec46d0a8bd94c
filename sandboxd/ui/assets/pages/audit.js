// Audit: the tenant's records (admin: every tenant's), a page at a time, filtered by action;
// "verify chain" asks the daemon to recompute the whole chain, as `sandboxd audit verify`.
import { useState } from "../vendor/hooks.js";
import { api, html, pageOf } from "../api.js";
import { ErrorBox, Link, usePoll } from "../components.js";

function Target({ id }) {
  const page = pageOf(id);
  return page ? html`<${Link} to=${page}>${id}</${Link}>` : html`<span>${id || ""}</span>`;
}

export function AuditPage() {
  const [cursors, setCursors] = useState([0]);
  const [action, setAction] = useState("");
  const [tenant, setTenant] = useState("");
  const [verdict, setVerdict] = useState(null);
  const [verifyError, setVerifyError] = useState(null);
  const after = cursors[cursors.length - 1];
  const query = new URLSearchParams({ after: String(after), limit: "100" });
  if (tenant) query.set("tenant", tenant);
  const [page, error] = usePoll(() => api("GET", `v1/audit?${query}`), 0, [query.toString()]);
  const verify = async () => {
    setVerdict(null);
    try { setVerdict(await api("GET", "v1/audit/verify")); setVerifyError(null); } catch (e) { setVerifyError(e); }
  };
  if (error && error.status === 403) {
    return html`<section><h1>Audit</h1><p class="error forbidden">This token cannot read the audit trail: it needs the audit:read scope.</p></section>`;
  }
  const records = page ? page.records.filter((r) => !action || r.action.includes(action)) : [];
  return html`<section>
    <h1>Audit</h1>
    <div class="row">
      <button type="button" class="primary" onClick=${verify}>Verify chain</button>
      ${verdict ? html`<span class=${verdict.ok ? "verdict-ok" : "verdict-bad"} role="status">
        ${verdict.ok ? `chain intact: ${verdict.records} records` : `TAMPERED at record ${verdict.seq}: ${verdict.problem}`}</span>` : null}
    </div>
    <${ErrorBox} error=${verifyError} />
    <form class="filters" onSubmit=${(e) => e.preventDefault()}>
      <label>action <input value=${action} placeholder="e.g. run.create" onInput=${(e) => setAction(e.target.value.trim())} /></label>
      <label>tenant <input value=${tenant} placeholder="admin: any" size="10" onChange=${(e) => { setCursors([0]); setTenant(e.target.value.trim()); }} /></label>
    </form>
    <${ErrorBox} error=${error} />
    <table class="list audit"><thead><tr><th>#</th><th>time</th><th>tenant</th><th>action</th><th>target</th><th>status</th><th>trace id</th></tr></thead>
      <tbody>${records.map((r) => html`<tr>
        <td>${r.seq}</td><td>${new Date(r.time * 1000).toLocaleString()}</td><td>${r.tenant || ""}</td><td>${r.action}</td>
        <td><${Target} id=${r.target} /></td><td>${r.result.http_status || ""}${r.result.error ? ` ${r.result.error}` : ""}</td><td><code>${r.trace_id || ""}</code></td></tr>`)}</tbody></table>
    <div class="pager">
      ${cursors.length > 1 ? html`<button type="button" onClick=${() => setCursors(cursors.slice(0, -1))}>← earlier</button>` : null}
      ${page && page.next_after ? html`<button type="button" onClick=${() => setCursors([...cursors, page.next_after])}>later →</button>` : null}
    </div>
  </section>`;
}

// Sandboxes: the list (and a new one), and one sandbox: its policy as data, a file browser
// (view, download, upload, delete), a run in it with live output, and its archive.
import { useEffect, useState } from "../vendor/hooks.js";
import { api, download, fetchBlob, html, navigate } from "../api.js";
import { ErrorBox, KV, Link, Meter, usePoll, when } from "../components.js";
import { LiveRun, useLiveRun } from "./playground.js";

export function SandboxesPage() {
  const [list, error, reload] = usePoll(() => api("GET", "v1/sandboxes"), 5000, []);
  const [form, setForm] = useState({ language: "python", disk_mib: "64", ttl_s: "3600" });
  const [createError, setCreateError] = useState(null);
  const create = async (e) => {
    e.preventDefault();
    try {
      const sbx = await api("POST", "v1/sandboxes", { json: { language: form.language, ttl_s: Number(form.ttl_s), limits: { disk_mib: Number(form.disk_mib) } } });
      navigate(`sandboxes/${sbx.id}`);
    } catch (err) { setCreateError(err); reload(); }
  };
  return html`<section>
    <h1>Sandboxes</h1>
    <${ErrorBox} error=${error} />
    ${list && html`<table class="list"><thead><tr><th>sandbox</th><th>language</th><th>backend</th><th>disk</th><th>created</th><th>expires</th></tr></thead>
      <tbody>${list.sandboxes.map((s) => html`<tr>
        <td><${Link} to=${`sandboxes/${s.id}`}>${s.id}</${Link}></td><td>${s.language}</td><td>${s.backend}</td>
        <td>${s.limits.disk_mib} MiB</td><td>${when(s.created_at)}</td><td>${when(s.expires_at)}</td></tr>`)}</tbody></table>
      ${list.sandboxes.length === 0 ? html`<p class="empty">No sandboxes.</p>` : null}`}
    <h2>New sandbox</h2>
    <form class="row" onSubmit=${create}>
      <label>language <select value=${form.language} onChange=${(e) => setForm({ ...form, language: e.target.value })}><option>python</option><option>bash</option><option>node</option></select></label>
      <label>disk MiB <input value=${form.disk_mib} size="5" onInput=${(e) => setForm({ ...form, disk_mib: e.target.value })} /></label>
      <label>idle TTL s <input value=${form.ttl_s} size="6" onInput=${(e) => setForm({ ...form, ttl_s: e.target.value })} /></label>
      <button type="submit" class="primary">Create</button>
    </form>
    <${ErrorBox} error=${createError} />
  </section>`;
}

// One folder of the workspace, listed by a run in the sandbox itself (the daemon never walks
// a tree the sandbox wrote): a fixed script, the folder as its argument, NUL-separated names.
const LIST = 'du -sk . | cut -f1; printf "\\0"; find "./$1" -mindepth 1 -maxdepth 1 -printf "%y\\t%s\\t%P\\0"';

async function listFolder(id, dir) {
  const result = await api("POST", `v1/sandboxes/${id}/runs`, { json: { command: ["sh", "-c", LIST, "sh", dir] } });
  if (result.status !== "ok") throw new Error(`listing failed (${result.status}): ${result.stderr}`);
  const [du, ...rows] = result.stdout.split("\0");
  const entries = rows.filter(Boolean).map((row) => {
    const [type, size, ...name] = row.split("\t");
    return { dir: type === "d", size: Number(size), name: name.join("\t") };
  });
  entries.sort((a, b) => (a.dir === b.dir ? a.name.localeCompare(b.name) : a.dir ? -1 : 1));
  return { usedKiB: Number(du.trim()), entries };
}

const filePath = (id, path) => `v1/sandboxes/${id}/files/${path.split("/").map(encodeURIComponent).join("/")}`;

function FileBrowser({ id, refresh, onUsage }) {
  const [dir, setDir] = useState("");
  const [listing, setListing] = useState(null);
  const [error, setError] = useState(null);
  const [viewing, setViewing] = useState(null); // {path, text}
  const load = async () => {
    try { const got = await listFolder(id, dir); setListing(got); onUsage(got.usedKiB); setError(null); } catch (e) { setError(e); }
  };
  useEffect(() => { load(); }, [id, dir, refresh]);
  const join = (name) => (dir ? `${dir}/${name}` : name);
  const act = (fn) => async () => { try { await fn(); } catch (e) { setError(e); } };
  const view = (path) => act(async () => {
    const blob = await fetchBlob(filePath(id, path));
    const text = await blob.slice(0, 200000).text();
    setViewing({ path, text, cut: blob.size > 200000 });
  });
  const remove = (path) => act(async () => { await api("DELETE", filePath(id, path)); setViewing(null); await load(); });
  const upload = async (e) => {
    const files = [...e.target.files];
    e.target.value = "";
    await act(async () => {
      for (const f of files) await api("PUT", filePath(id, join(f.name)), { body: f });
      await load();
    })();
  };
  const crumbs = dir ? dir.split("/") : [];
  return html`<div class="browser">
    <p class="crumbs"><a href="#" onClick=${(e) => { e.preventDefault(); setDir(""); }}>workspace</a>
      ${crumbs.map((c, i) => html` / <a href="#" onClick=${(e) => { e.preventDefault(); setDir(crumbs.slice(0, i + 1).join("/")); }}>${c}</a>`)}</p>
    <${ErrorBox} error=${error} />
    ${listing && html`<table class="list files"><thead><tr><th>name</th><th>size</th><th></th></tr></thead><tbody>
      ${listing.entries.map((f) => html`<tr>
        <td>${f.dir ? html`<a href="#" class="folder" onClick=${(e) => { e.preventDefault(); setDir(join(f.name)); }}>${f.name}/</a>` : html`<span class="path">${f.name}</span>`}</td>
        <td>${f.dir ? "" : `${f.size} bytes`}</td>
        <td>${f.dir ? null : html`<button type="button" onClick=${view(join(f.name))}>view</button>
          <button type="button" onClick=${act(() => download(filePath(id, join(f.name)), f.name))}>download</button>
          <button type="button" class="danger" onClick=${remove(join(f.name))}>delete</button>`}</td></tr>`)}
    </tbody></table>${listing.entries.length === 0 ? html`<p class="empty">Empty folder.</p>` : null}`}
    <label class="upload">upload into this folder <input type="file" multiple onChange=${upload} /></label>
    ${viewing && html`<div class="viewer"><div class="output-label">${viewing.path}${viewing.cut ? " (first 200 kB)" : ""}
      <button type="button" onClick=${() => setViewing(null)}>close</button></div><pre class="stream">${viewing.text}</pre></div>`}
  </div>`;
}

export function SandboxPage({ id }) {
  const [sbx, error] = usePoll(() => api("GET", `v1/sandboxes/${encodeURIComponent(id)}`), 0, [id]);
  const [usedKiB, setUsed] = useState(null);
  const [code, setCode] = useState('print("hello from the sandbox")\n');
  const [live, start, cancel] = useLiveRun(`v1/sandboxes/${encodeURIComponent(id)}/runs`);
  const [actError, setActError] = useState(null);
  const refresh = live && !live.running ? live.runId : null;
  if (error) return html`<section><h1>Sandbox ${id}</h1><${ErrorBox} error=${error} /></section>`;
  if (!sbx) return html`<section><h1>Sandbox ${id}</h1><p>loading…</p></section>`;
  const l = sbx.limits;
  const remove = async () => {
    try { await api("DELETE", `v1/sandboxes/${sbx.id}`); navigate("sandboxes"); } catch (e) { setActError(e); }
  };
  return html`<section>
    <h1>Sandbox <span class="id">${sbx.id}</span></h1>
    <div class="split">
      <div>
        <h2>Policy</h2>
        <${KV} rows=${[
          ["language", sbx.language], ["backend", sbx.backend], sbx.image && ["image", sbx.image],
          ["network", sbx.network.mode === "none" ? "none (loopback only)" : `allowlist: ${sbx.network.allow.join(", ")}`],
          ["idle TTL", `${sbx.ttl_s} s`], ["created", when(sbx.created_at)], ["last used", when(sbx.last_used_at)], ["expires", when(sbx.expires_at)],
          ["disk", usedKiB === null ? `${l.disk_mib} MiB quota` : html`<${Meter} value=${usedKiB} max=${l.disk_mib * 1024} label=${`${usedKiB < 1024 ? `${usedKiB} KiB` : `${(usedKiB / 1024).toFixed(1)} MiB`} of ${l.disk_mib} MiB used`} />`],
          ["run limits", `wall ${l.wall_time_s} s, cpu ${l.cpu_time_s} s, memory ${l.memory_mib} MiB, ${l.pids} processes, output ${l.output_bytes} bytes, files ${l.file_size_mib} MiB`],
        ]} />
        <p><button type="button" onClick=${() => download(`v1/sandboxes/${sbx.id}/archive`, `${sbx.id}.tar`).catch(setActError)}>Download archive (.tar)</button>
          <button type="button" class="danger" onClick=${remove}>Delete sandbox</button></p>
        <${ErrorBox} error=${actError} />
      </div>
      <div>
        <h2>Files</h2>
        <${FileBrowser} id=${sbx.id} refresh=${refresh} onUsage=${setUsed} />
      </div>
    </div>
    <h2>Run in it</h2>
    <form onSubmit=${(e) => { e.preventDefault(); start({ code }); }}>
      <textarea class="code" name="sandbox-code" rows="6" spellcheck="false" value=${code} onInput=${(e) => setCode(e.target.value)}></textarea>
      <p><button type="submit" class="primary" disabled=${live && live.running}>Run in ${sbx.language}</button></p>
    </form>
    <${LiveRun} live=${live} onCancel=${cancel} />
  </section>`;
}

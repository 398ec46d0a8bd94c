// The Studio's shell: sign-in (a pasted token, kept in sessionStorage only), navigation
// (only the pages this token may read), and the routes, each a link that can be shared.
import { render } from "./vendor/preact.js";
import { useEffect, useState } from "./vendor/hooks.js";
import { ApiError, api, clearToken, currentPath, getToken, html, onNavigate, setToken } from "./api.js";
import { ErrorBox, Link } from "./components.js";
import { AuditPage } from "./pages/audit.js";
import { OverviewPage } from "./pages/overview.js";
import { PlaygroundPage } from "./pages/playground.js";
import { RunPage, RunsPage } from "./pages/runs.js";
import { SandboxPage, SandboxesPage } from "./pages/sandboxes.js";
import { SolvePage, SolvesPage } from "./pages/solves.js";

const PAGES = [
  // [nav path, title, the call that tells whether this token may read it]
  ["", "Runs", "v1/runs?limit=1"],
  ["sandboxes", "Sandboxes", "v1/sandboxes"],
  ["playground", "Playground", "v1/runs?limit=1"],
  ["solves", "Solves", "v1/solves?limit=1"],
  ["audit", "Audit", "v1/audit?limit=1"],
  ["overview", "Overview", "v1/stats"],
];

function route(path) {
  const [first, second, ...rest] = path.split("/");
  if (rest.length) return null;
  if (!first) return html`<${RunsPage} />`;
  if (first === "runs") return second ? html`<${RunPage} id=${second} />` : html`<${RunsPage} />`;
  if (first === "sandboxes") return second ? html`<${SandboxPage} id=${second} key=${second} />` : html`<${SandboxesPage} />`;
  if (first === "solves") return second ? html`<${SolvePage} id=${second} key=${second} />` : html`<${SolvesPage} />`;
  if (second) return null;
  return { playground: html`<${PlaygroundPage} />`, audit: html`<${AuditPage} />`, overview: html`<${OverviewPage} />` }[first] || null;
}

// Which pages the token may read: a 403 hides one (401: the token is not valid at all).
async function allowedPages() {
  const allowed = new Set();
  const probes = PAGES.map(async ([path, , probe]) => {
    try { await api("GET", probe); allowed.add(path); } catch (e) {
      if (e instanceof ApiError && e.status === 401) throw e;
    }
  });
  await Promise.all(probes);
  return allowed;
}

function SignIn({ onSignedIn, error }) {
  const [value, setValue] = useState("");
  const submit = (e) => {
    e.preventDefault();
    if (value.trim()) onSignedIn(value.trim());
  };
  return html`<main class="signin">
    <h1>sandboxd Studio</h1>
    <form onSubmit=${submit}>
      <label class="block">API token <input type="password" name="token" autocomplete="off" value=${value} onInput=${(e) => setValue(e.target.value)} placeholder="sbd_…" /></label>
      <p class="hint">Kept in this tab only (sessionStorage), sent as a bearer header; never in a URL or cookie.
        On the daemon's machine: <code>cat /var/lib/sandboxd/admin.token</code>, or <code>sandboxd token create</code>.</p>
      <button type="submit" class="primary">Sign in</button>
    </form>
    <${ErrorBox} error=${error} />
  </main>`;
}

function App() {
  const [path, setPath] = useState(currentPath());
  const [pages, setPages] = useState(null);
  const [error, setError] = useState(null);
  const [token, setTok] = useState(getToken());
  useEffect(() => onNavigate(() => setPath(currentPath())), []);
  useEffect(() => {
    if (!token) return;
    allowedPages().then(setPages, (e) => {
      clearToken();
      setTok("");
      setError(e);
    });
  }, [token]);
  if (!token) return html`<${SignIn} error=${error} onSignedIn=${(t) => { setToken(t); setError(null); setPages(null); setTok(t); }} />`;
  if (!pages) return html`<main><p>signing in…</p></main>`;
  const signOut = () => { clearToken(); setTok(""); setPages(null); };
  const section = path.split("/")[0] === "runs" ? "" : path.split("/")[0];
  const page = route(path);
  return html`<div class="shell">
    <nav>
      <span class="brand">sandboxd Studio</span>
      ${PAGES.filter(([p]) => pages.has(p)).map(([p, title]) => html`<${Link} to=${p} class=${section === p ? "active" : ""}>${title}</${Link}>`)}
      <button type="button" class="signout" onClick=${signOut}>Sign out</button>
    </nav>
    <main>${page || html`<section><h1>Not found</h1><p>No such page in the Studio.</p></section>`}</main>
  </div>`;
}

render(html`<${App} />`, document.getElementById("app"));

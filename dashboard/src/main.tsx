import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { ApiFail, get, post, setSession, whenSignedOut, type SessionInfo, type Tenant } from "./api";
import { Usage } from "./pages/Usage";
import { Payments } from "./pages/Payments";
import { Keys } from "./pages/Keys";
import { Routes } from "./pages/Routes";
import { Tenants } from "./pages/Tenants";
import "./style.css";

type Page = "usage" | "payments" | "keys" | "routes" | "tenants";
const PAGES: { id: Page; label: string; operatorOnly?: boolean }[] = [
  { id: "usage", label: "Usage" },
  { id: "payments", label: "Payments" },
  { id: "keys", label: "API keys" },
  { id: "routes", label: "Routes" },
  { id: "tenants", label: "Tenants", operatorOnly: true },
];

function pageFromHash(): Page {
  const h = location.hash.replace(/^#\/?/, "");
  return (PAGES.find((p) => p.id === h)?.id ?? "usage") as Page;
}

function Login({ onIn }: { onIn: (s: SessionInfo) => void }) {
  const [token, setToken] = useState("");
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  async function submit(e: Event) {
    e.preventDefault();
    setBusy(true);
    setError("");
    try {
      const s = await post<SessionInfo>("/dashboard/api/login", { token });
      setToken("");
      onIn(s);
    } catch (err) {
      setError(err instanceof ApiFail ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  }
  return (
    <main class="login">
      <h1>x402-gate</h1>
      <form onSubmit={submit}>
        <label>
          API key or admin token
          <input
            id="token"
            type="password"
            autocomplete="off"
            value={token}
            onInput={(e) => setToken((e.target as HTMLInputElement).value)}
          />
        </label>
        <button id="sign-in" type="submit" disabled={busy || !token}>
          Sign in
        </button>
        {error && <p class="error" role="alert">{error}</p>}
      </form>
      <p class="hint">The key stays on the server: the browser only holds a session cookie.</p>
    </main>
  );
}

/** The operator picks the tenant whose usage, keys and routes it looks at. */
export interface Scope {
  session: SessionInfo;
  tenant: string | null;
  tenants: Tenant[];
}

function App() {
  const [session, setS] = useState<SessionInfo | null | undefined>(undefined);
  const [page, setPage] = useState<Page>(pageFromHash());
  const [tenants, setTenants] = useState<Tenant[]>([]);
  const [tenant, setTenant] = useState<string | null>(null);

  function signedIn(s: SessionInfo | null) {
    setSession(s);
    setS(s);
  }
  useEffect(() => {
    whenSignedOut(() => signedIn(null));
    get<SessionInfo>("/dashboard/api/session").then(signedIn, () => signedIn(null));
    const f = () => setPage(pageFromHash());
    addEventListener("hashchange", f);
    return () => removeEventListener("hashchange", f);
  }, []);
  useEffect(() => {
    if (session?.role === "operator") {
      get<Tenant[]>("/api/v1/x402/admin/tenants").then((ts) => {
        setTenants(ts);
        setTenant((cur) => cur ?? ts[0]?.id ?? null);
      });
    } else {
      setTenant(session?.tenant ?? null);
    }
  }, [session]);

  if (session === undefined) return <p class="loading">Loading…</p>;
  if (session === null) return <Login onIn={signedIn} />;

  async function signOut() {
    try {
      await post("/dashboard/api/logout");
    } finally {
      signedIn(null);
    }
  }
  const scope: Scope = { session, tenant, tenants };
  const operator = session.role === "operator";
  return (
    <div class="shell">
      <header>
        <strong>x402-gate</strong>
        <nav>
          {PAGES.filter((p) => !p.operatorOnly || operator).map((p) => (
            <a id={`nav-${p.id}`} href={`#/${p.id}`} class={p.id === page ? "active" : ""}>
              {p.label}
            </a>
          ))}
        </nav>
        <span class="who" id="who">
          {operator ? "operator" : `tenant ${session.tenant}`}
        </span>
        {operator && page !== "tenants" && (
          <select
            id="tenant-picker"
            aria-label="Tenant"
            value={tenant ?? ""}
            onChange={(e) => setTenant((e.target as HTMLSelectElement).value)}
          >
            {tenants.map((t) => (
              <option value={t.id}>{t.id}</option>
            ))}
          </select>
        )}
        <button id="sign-out" class="link" onClick={signOut}>
          Sign out
        </button>
      </header>
      <main>
        {page === "usage" && <Usage scope={scope} />}
        {page === "payments" && <Payments scope={scope} />}
        {page === "keys" && <Keys scope={scope} />}
        {page === "routes" && <Routes scope={scope} />}
        {page === "tenants" && operator && (
          <Tenants onChange={(ts) => setTenants(ts)} />
        )}
      </main>
    </div>
  );
}

render(<App />, document.getElementById("app")!);

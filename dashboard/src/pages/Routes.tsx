import { useEffect, useState } from "preact/hooks";
import { ApiFail, del, get, patch, post, qs, type FieldError, type Route } from "../api";
import { Failure } from "./common";
import type { Scope } from "../main";

const SETTLE = ["after", "before", "deferred"];

interface Draft {
  host: string;
  path: string;
  methods: string;
  upstream: string;
  price: string;
  networks: string;
  settle: string;
  description: string;
}
const EMPTY: Draft = {
  host: "",
  path: "",
  methods: "",
  upstream: "",
  price: "",
  networks: "",
  settle: "after",
  description: "",
};

const list = (s: string) =>
  s.trim() ? s.split(",").map((x) => x.trim()).filter(Boolean) : null;

function FieldMsg({ fields, name }: { fields: FieldError[]; name: string }) {
  const f = fields.filter((x) => x.field === name || x.field.startsWith(`${name}.`) || x.field.startsWith(`${name}[`));
  if (f.length === 0) return null;
  return (
    <span class="field-error" data-field-error={name} role="alert">
      {f.map((x) => x.message).join("; ")}
    </span>
  );
}

/** Splits a refusal into per-field messages and the rest. */
function split(e: unknown): { fields: FieldError[]; error: unknown } {
  if (e instanceof ApiFail && e.fields.length > 0) return { fields: e.fields, error: e };
  return { fields: [], error: e };
}

function Editor({ route, onDone }: { route: Route; onDone: () => void }) {
  const [price, setPrice] = useState(route.price);
  const [settle, setSettle] = useState(route.settle);
  const [fields, setFields] = useState<FieldError[]>([]);
  const [error, setError] = useState<unknown>(null);
  async function save() {
    try {
      await patch(`/api/v1/x402/routes/${encodeURIComponent(route.id)}`, { price, settle });
      onDone();
    } catch (e) {
      const s = split(e);
      setFields(s.fields);
      setError(s.error);
    }
  }
  return (
    <div class="editor">
      <label>
        Price
        <input class="edit-price" value={price} onInput={(e) => setPrice((e.target as HTMLInputElement).value)} />
        <FieldMsg fields={fields} name="price" />
      </label>
      <label>
        Settle
        <select class="edit-settle" value={settle} onChange={(e) => setSettle((e.target as HTMLSelectElement).value)}>
          {SETTLE.map((s) => (
            <option value={s}>{s}</option>
          ))}
        </select>
        <FieldMsg fields={fields} name="settle" />
      </label>
      <button class="save-route" onClick={save}>
        Save
      </button>
      <button class="link" onClick={onDone}>
        Cancel
      </button>
      {fields.length === 0 && <Failure error={error} />}
    </div>
  );
}

export function Routes({ scope }: { scope: Scope }) {
  const operator = scope.session.role === "operator";
  const [routes, setRoutes] = useState<Route[] | null>(null);
  const [unavailable, setUnavailable] = useState(false);
  const [draft, setDraft] = useState<Draft>(EMPTY);
  const [fields, setFields] = useState<FieldError[]>([]);
  const [error, setError] = useState<unknown>(null);
  const [editing, setEditing] = useState<string | null>(null);
  const [confirming, setConfirming] = useState<string | null>(null);

  async function load() {
    try {
      const q = operator ? qs({ tenant: scope.tenant }) : "";
      setRoutes((await get<{ routes: Route[] }>(`/api/v1/x402/routes${q}`)).routes);
    } catch (e) {
      // A gateway without the routes API answers its JSON 404 for an unknown endpoint.
      if (e instanceof ApiFail && e.status === 404 && e.code === "not_found" && /endpoint/.test(e.message)) {
        setUnavailable(true);
      } else {
        setError(e);
      }
    }
  }
  useEffect(() => {
    if (scope.tenant) load();
  }, [scope.tenant]);

  if (unavailable)
    return (
      <section id="routes-page">
        <h2>Routes</h2>
        <p class="notice" id="routes-unavailable">
          Routes through the API are not available on this gateway version: routes and prices
          are set in its TOML config.
        </p>
      </section>
    );

  async function create(e: Event) {
    e.preventDefault();
    setFields([]);
    setError(null);
    const body: Record<string, unknown> = {
      host: draft.host.trim() || null,
      path: draft.path.trim(),
      methods: list(draft.methods),
      upstream: draft.upstream.trim(),
      price: draft.price.trim(),
      networks: list(draft.networks),
      settle: draft.settle,
      description: draft.description,
    };
    if (operator) body.tenant = scope.tenant;
    try {
      await post<Route>("/api/v1/x402/routes", body);
      setDraft(EMPTY);
      await load();
    } catch (err) {
      const s = split(err);
      setFields(s.fields);
      setError(s.error);
    }
  }
  async function remove(id: string) {
    setConfirming(null);
    setError(null);
    try {
      await del(`/api/v1/x402/routes/${encodeURIComponent(id)}`);
    } catch (e) {
      setError(e);
    }
    await load();
  }
  const input = (name: keyof Draft, label: string, placeholder = "") => (
    <label>
      {label}
      <input
        name={name}
        placeholder={placeholder}
        value={draft[name]}
        onInput={(e) => setDraft({ ...draft, [name]: (e.target as HTMLInputElement).value })}
      />
      <FieldMsg fields={fields} name={name} />
    </label>
  );

  return (
    <section id="routes-page">
      <h2>Routes of {scope.tenant}</h2>
      <table id="routes">
        <thead>
          <tr>
            <th>Host</th>
            <th>Path</th>
            <th>Methods</th>
            <th>Upstream</th>
            <th>Price</th>
            <th>Settle</th>
            <th>Source</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {routes?.length === 0 && (
            <tr>
              <td colSpan={8} class="empty">
                No routes yet.
              </td>
            </tr>
          )}
          {routes?.map((r) => (
            <tr data-route-id={r.id} data-path={r.path}>
              <td>{r.host ?? "any"}</td>
              <td>
                <code>{r.path}</code>
              </td>
              <td>{r.methods?.join(", ") ?? "any"}</td>
              <td class="upstream">{r.upstream}</td>
              <td class="price">{r.price}</td>
              <td class="settle">{r.settle}</td>
              <td>{r.source}</td>
              <td class="actions">
                {r.source === "config" ? (
                  <span class="muted">config</span>
                ) : editing === r.id ? (
                  <Editor
                    route={r}
                    onDone={() => {
                      setEditing(null);
                      load();
                    }}
                  />
                ) : (
                  <>
                    <button class="edit-route" onClick={() => setEditing(r.id)}>
                      Edit
                    </button>
                    {confirming === r.id ? (
                      <button class="danger confirm-delete" onClick={() => remove(r.id)}>
                        Confirm delete
                      </button>
                    ) : (
                      <button class="delete-route" onClick={() => setConfirming(r.id)}>
                        Delete
                      </button>
                    )}
                  </>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <h3>New route</h3>
      <form id="new-route" class="grid" onSubmit={create}>
        {input("host", "Host", "any")}
        {input("path", "Path", "/v1/*")}
        {input("methods", "Methods", "GET, POST (empty: any)")}
        {input("upstream", "Upstream", "https://api.example.com")}
        {input("price", "Price", "$0.01")}
        {input("networks", "Networks", "eip155:8453 (empty: the plan's)")}
        <label>
          Settle
          <select
            name="settle"
            value={draft.settle}
            onChange={(e) => setDraft({ ...draft, settle: (e.target as HTMLSelectElement).value })}
          >
            {SETTLE.map((s) => (
              <option value={s}>{s}</option>
            ))}
          </select>
          <FieldMsg fields={fields} name="settle" />
        </label>
        {input("description", "Description")}
        <button id="create-route" type="submit">
          Create route
        </button>
      </form>
      <Failure error={error} />
    </section>
  );
}

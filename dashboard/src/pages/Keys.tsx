import { useEffect, useState } from "preact/hooks";
import { get, post, type Key, type NewKey } from "../api";
import { when } from "../format";
import { Failure } from "./common";
import type { Scope } from "../main";

const SCOPES = ["verify", "usage:read", "keys:write", "payments:read", "routes:write"];

function state(k: Key): string {
  const now = Date.now() / 1000;
  if (k.revoked_at && k.revoked_at <= now) return "revoked";
  if (k.expires_at && k.expires_at <= now) return "expired";
  if (k.revoked_at) return `retiring ${when(k.revoked_at)}`;
  return "live";
}

export function Keys({ scope }: { scope: Scope }) {
  const operator = scope.session.role === "operator";
  const base = operator ? "/api/v1/x402/admin" : "/api/v1/x402";
  const listPath = operator ? `${base}/tenants/${scope.tenant}/keys` : `${base}/keys`;
  // The scopes a new key may get: what the signed-in key holds (a key never grants more).
  const grantable = SCOPES.filter((s) => scope.session.scopes.includes(s));
  const [keys, setKeys] = useState<Key[]>([]);
  const [fresh, setFresh] = useState<NewKey | null>(null);
  const [chosen, setChosen] = useState<string[]>(grantable);
  const [confirming, setConfirming] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);

  async function load() {
    if (!scope.tenant) return;
    try {
      setKeys(await get<Key[]>(listPath));
    } catch (e) {
      setError(e);
    }
  }
  useEffect(() => {
    setFresh(null);
    setError(null);
    load();
  }, [scope.tenant]);

  async function act(f: () => Promise<void>) {
    setError(null);
    try {
      await f();
    } catch (e) {
      setError(e);
    }
    await load();
  }
  const create = () =>
    act(async () => {
      setFresh(await post<NewKey>(listPath, { scopes: chosen }));
    });
  const rotate = (id: string) =>
    act(async () => {
      const r = await post<{ new_key: NewKey }>(`${base}/keys/${id}/rotate`, {});
      setFresh(r.new_key);
    });
  const revoke = (id: string) =>
    act(async () => {
      setConfirming(null);
      await post(`${base}/keys/${id}/revoke`);
    });

  return (
    <section id="keys-page">
      <h2>API keys of {scope.tenant}</h2>
      {fresh && (
        <div class="secret" id="new-key" role="status">
          <p>
            New key <code>{fresh.id}</code>. Copy it now: it is shown this once and never again.
          </p>
          <input id="new-key-value" readOnly value={fresh.key} onFocus={(e) => (e.target as HTMLInputElement).select()} />
          <button onClick={() => navigator.clipboard?.writeText(fresh.key)}>Copy</button>
          <button class="link" onClick={() => setFresh(null)}>
            Done
          </button>
        </div>
      )}
      <Failure error={error} />
      <div class="create-key">
        <span>New key with scopes:</span>
        {grantable.map((s) => (
          <label class="inline">
            <input
              type="checkbox"
              name="scope"
              value={s}
              checked={chosen.includes(s)}
              onChange={(e) =>
                setChosen(
                  (e.target as HTMLInputElement).checked
                    ? [...chosen, s]
                    : chosen.filter((c) => c !== s),
                )
              }
            />
            {s}
          </label>
        ))}
        <button id="create-key" onClick={create} disabled={chosen.length === 0}>
          Create key
        </button>
      </div>
      <table id="keys">
        <thead>
          <tr>
            <th>Key</th>
            <th>Scopes</th>
            <th>Created</th>
            <th>Last used</th>
            <th>Expires</th>
            <th>State</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {keys.map((k) => {
            const st = state(k);
            return (
              <tr data-key-id={k.id} data-state={st}>
                <td>
                  <code>{k.prefix}…</code>
                </td>
                <td>{k.scopes.join(", ")}</td>
                <td>{when(k.created_at)}</td>
                <td>{when(k.last_used_at)}</td>
                <td>{k.expires_at ? when(k.expires_at) : "never"}</td>
                <td class="key-state">{st}</td>
                <td class="actions">
                  {st === "live" && (
                    <>
                      <button class="rotate" onClick={() => rotate(k.id)}>
                        Rotate
                      </button>
                      {confirming === k.id ? (
                        <button class="danger confirm-revoke" onClick={() => revoke(k.id)}>
                          Confirm revoke
                        </button>
                      ) : (
                        <button class="revoke" onClick={() => setConfirming(k.id)}>
                          Revoke
                        </button>
                      )}
                    </>
                  )}
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
      <p class="hint">
        Rotating keeps the old key working for 24 hours, then it retires. Revoking ends it now.
      </p>
    </section>
  );
}

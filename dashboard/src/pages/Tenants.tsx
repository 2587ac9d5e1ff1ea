import { useEffect, useState } from "preact/hooks";
import { get, patch, post, type Tenant, type Tier } from "../api";
import { when } from "../format";
import { Failure } from "./common";

export function Tenants({ onChange }: { onChange: (ts: Tenant[]) => void }) {
  const [tenants, setTenants] = useState<Tenant[]>([]);
  const [tiers, setTiers] = useState<Tier[]>([]);
  const [error, setError] = useState<unknown>(null);

  async function load() {
    try {
      const ts = await get<Tenant[]>("/api/v1/x402/admin/tenants");
      setTenants(ts);
      onChange(ts);
    } catch (e) {
      setError(e);
    }
  }
  useEffect(() => {
    load();
    get<Tier[]>("/api/v1/x402/admin/tiers").then(setTiers, setError);
  }, []);

  async function act(f: () => Promise<unknown>) {
    setError(null);
    try {
      await f();
    } catch (e) {
      setError(e);
    }
    await load();
  }
  const path = (id: string) => `/api/v1/x402/admin/tenants/${encodeURIComponent(id)}`;
  return (
    <section id="tenants-page">
      <h2>Tenants</h2>
      <Failure error={error} />
      <table id="tenants">
        <thead>
          <tr>
            <th>Id</th>
            <th>Name</th>
            <th>Email</th>
            <th>Plan</th>
            <th>Status</th>
            <th>Source</th>
            <th>Created</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {tenants.map((t) => (
            <tr data-tenant={t.id} data-status={t.status}>
              <td>{t.id}</td>
              <td>{t.name}</td>
              <td>{t.email ?? "—"}</td>
              <td>
                <select
                  class="tier"
                  aria-label={`plan of ${t.id}`}
                  value={t.tier}
                  onChange={(e) =>
                    act(() => patch(path(t.id), { tier: (e.target as HTMLSelectElement).value }))
                  }
                >
                  {tiers.map((tier) => (
                    <option value={tier.name}>
                      {tier.name} ({tier.monthly_verifications ?? "∞"}/month)
                    </option>
                  ))}
                </select>
              </td>
              <td class={`status ${t.status}`}>{t.status}</td>
              <td>{t.source}</td>
              <td>{when(t.created_at)}</td>
              <td class="actions">
                {t.status === "active" ? (
                  <button class="danger suspend" onClick={() => act(() => post(`${path(t.id)}/suspend`))}>
                    Suspend
                  </button>
                ) : (
                  <button class="activate" onClick={() => act(() => post(`${path(t.id)}/activate`))}>
                    Activate
                  </button>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

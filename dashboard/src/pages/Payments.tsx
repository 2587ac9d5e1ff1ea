import { useEffect, useState } from "preact/hooks";
import { get, qs, type Payment, type PaymentsPage } from "../api";
import { explorerUrl, money, short, when } from "../format";
import { Failure, useChains } from "./common";
import type { Scope } from "../main";

const STATUSES = ["", "claimed", "settling", "settled", "queued", "released", "failed"];
const PAGE = 20;

function Tx({ p }: { p: Payment }) {
  if (!p.tx_hash) return <span class="muted">—</span>;
  const url = explorerUrl(p.network, p.tx_hash);
  return url ? (
    <a class="tx" href={url} target="_blank" rel="noopener noreferrer" title={p.tx_hash}>
      {short(p.tx_hash)}
    </a>
  ) : (
    <code class="tx" title={p.tx_hash}>
      {short(p.tx_hash)}
    </code>
  );
}

export function Payments({ scope }: { scope: Scope }) {
  const operator = scope.session.role === "operator";
  const [status, setStatus] = useState("");
  const [network, setNetwork] = useState("");
  const [allTenants, setAllTenants] = useState(false);
  // The `before` cursor of each page seen, so "Newer" can go back.
  const [cursors, setCursors] = useState<(number | null)[]>([null]);
  const [page, setPage] = useState<PaymentsPage | null>(null);
  const [error, setError] = useState<unknown>(null);
  const chains = useChains();
  const before = cursors[cursors.length - 1];
  const tenant = operator && allTenants ? null : scope.tenant;

  useEffect(() => {
    setError(null);
    get<PaymentsPage>(
      `/api/v1/x402/admin/payments${qs({ tenant, status, network, before, limit: PAGE })}`,
    ).then(setPage, setError);
  }, [tenant, status, network, before]);

  function reset() {
    setCursors([null]);
  }
  return (
    <section id="payments-page">
      <h2>Payments</h2>
      <form class="filters" onSubmit={(e) => e.preventDefault()}>
        <label>
          Status
          <select
            id="filter-status"
            value={status}
            onChange={(e) => {
              setStatus((e.target as HTMLSelectElement).value);
              reset();
            }}
          >
            {STATUSES.map((s) => (
              <option value={s}>{s || "any"}</option>
            ))}
          </select>
        </label>
        <label>
          Network
          <select
            id="filter-network"
            value={network}
            onChange={(e) => {
              setNetwork((e.target as HTMLSelectElement).value);
              reset();
            }}
          >
            <option value="">any</option>
            {chains?.chains.map((c) => <option value={c.network}>{c.network}</option>)}
          </select>
        </label>
        {operator && (
          <label class="inline">
            <input
              type="checkbox"
              checked={allTenants}
              onChange={(e) => {
                setAllTenants((e.target as HTMLInputElement).checked);
                reset();
              }}
            />
            all tenants
          </label>
        )}
      </form>
      <Failure error={error} />
      <table id="payments">
        <thead>
          <tr>
            <th>#</th>
            <th>When</th>
            {operator && <th>Tenant</th>}
            <th>Route</th>
            <th>Network</th>
            <th class="num">Amount</th>
            <th>Payer</th>
            <th>Status</th>
            <th>Transaction</th>
          </tr>
        </thead>
        <tbody>
          {page?.payments.length === 0 && (
            <tr>
              <td colSpan={9} class="empty">
                No payments.
              </td>
            </tr>
          )}
          {page?.payments.map((p) => (
            <tr data-payment-id={p.id}>
              <td>{p.id}</td>
              <td>{when(p.claimed_at)}</td>
              {operator && <td>{p.tenant}</td>}
              <td>{p.route}</td>
              <td>{p.network}</td>
              <td class="num">{money(chains, p.network, p.asset, p.amount)}</td>
              <td title={p.payer}>{short(p.payer)}</td>
              <td>
                <span class={`status ${p.status}`} title={p.error ?? ""}>
                  {p.status}
                </span>
                {p.error_reason && <small class="muted"> {p.error_reason}</small>}
              </td>
              <td>
                <Tx p={p} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <div class="pager">
        <button
          id="newer"
          disabled={cursors.length <= 1}
          onClick={() => setCursors(cursors.slice(0, -1))}
        >
          ← Newer
        </button>
        <span>page {cursors.length}</span>
        <button
          id="older"
          disabled={!page?.next_before}
          onClick={() => page?.next_before && setCursors([...cursors, page.next_before])}
        >
          Older →
        </button>
      </div>
    </section>
  );
}

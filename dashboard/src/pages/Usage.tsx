import { useEffect, useRef, useState } from "preact/hooks";
import { BarController, BarElement, CategoryScale, Chart, LinearScale, Tooltip } from "chart.js";
import { get, qs, type Usage as UsageData } from "../api";
import { assetName, money } from "../format";
import { Failure, useChains } from "./common";
import type { Scope } from "../main";

Chart.register(BarController, BarElement, CategoryScale, LinearScale, Tooltip);

/** Every day of the month up to today (UTC), with the ledger's counts (zero where none). */
function monthDays(period: string, daily: UsageData["daily"]): { day: string; payments: number }[] {
  const [y, m] = period.split("-").map(Number);
  const today = new Date();
  const thisMonth = today.getUTCFullYear() === y && today.getUTCMonth() + 1 === m;
  const last = thisMonth ? today.getUTCDate() : new Date(Date.UTC(y, m, 0)).getUTCDate();
  const counts = new Map(daily.map((d) => [d.day, d.payments]));
  const out = [];
  for (let d = 1; d <= last; d++) {
    const day = `${period}-${String(d).padStart(2, "0")}`;
    out.push({ day, payments: counts.get(day) ?? 0 });
  }
  return out;
}

function DailyChart({ usage }: { usage: UsageData }) {
  const canvas = useRef<HTMLCanvasElement>(null);
  const days = monthDays(usage.period, usage.daily);
  const total = days.reduce((a, d) => a + d.payments, 0);
  useEffect(() => {
    if (!canvas.current) return;
    const chart = new Chart(canvas.current, {
      type: "bar",
      data: {
        labels: days.map((d) => d.day.slice(8)),
        datasets: [
          {
            label: "Settled payments",
            data: days.map((d) => d.payments),
            backgroundColor: "#2f6fde",
          },
        ],
      },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        scales: { y: { beginAtZero: true, ticks: { precision: 0 } } },
        plugins: { tooltip: { enabled: true } },
      },
    });
    canvas.current.dataset.chartReady = "1";
    return () => chart.destroy();
  }, [usage]);
  return (
    <figure class="chart" id="daily-chart" data-payments={total}>
      <div class="chart-box">
        <canvas ref={canvas} role="img" aria-label={`${total} settled payments this month, by day`} />
      </div>
      <figcaption>Settled payments per day, {usage.period} (UTC): {total} in all</figcaption>
    </figure>
  );
}

export function Usage({ scope }: { scope: Scope }) {
  const [usage, setUsage] = useState<UsageData | null>(null);
  const [error, setError] = useState<unknown>(null);
  const chains = useChains();
  useEffect(() => {
    if (!scope.tenant) return;
    setError(null);
    const q = scope.session.role === "operator" ? qs({ tenant: scope.tenant }) : "";
    get<UsageData>(`/api/v1/x402/usage${q}`).then(setUsage, setError);
  }, [scope.tenant]);
  if (error) return <Failure error={error} />;
  if (!usage) return <p class="loading">Loading…</p>;
  const pct = usage.limit ? Math.min(100, (usage.verified / usage.limit) * 100) : 0;
  return (
    <section id="usage-page">
      <h2>Usage of {usage.tenant} this month</h2>
      <div class="cards">
        <div class="card">
          <span class="label">Verified payments</span>
          <span class="big" id="verified">
            {usage.verified}
          </span>
          <span class="sub">
            of {usage.limit ?? "unlimited"} on the {usage.tier} plan
          </span>
          {usage.limit !== null && (
            <div class="meter" aria-label="plan used">
              <div style={{ width: `${pct}%` }} />
            </div>
          )}
        </div>
        <div class="card">
          <span class="label">Remaining</span>
          <span class="big">{usage.remaining ?? "∞"}</span>
          <span class="sub">{usage.period} (UTC)</span>
        </div>
      </div>
      <DailyChart usage={usage} />
      <h3>Revenue by route, network and asset</h3>
      <table id="revenue">
        <thead>
          <tr>
            <th>Route</th>
            <th>Network</th>
            <th>Asset</th>
            <th class="num">Payments</th>
            <th class="num">Amount</th>
          </tr>
        </thead>
        <tbody>
          {usage.revenue.length === 0 && (
            <tr>
              <td colSpan={5} class="empty">
                No settled payments this month.
              </td>
            </tr>
          )}
          {usage.revenue.map((r) => (
            <tr>
              <td>{r.route}</td>
              <td>{r.network}</td>
              <td>{assetName(chains, r.network, r.asset)}</td>
              <td class="num">{r.payments}</td>
              <td class="num">{money(chains, r.network, r.asset, r.amount)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

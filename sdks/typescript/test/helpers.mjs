// Where the gateway is: X402_GATE_* variables set by the Rust test tests/sdks.rs (which starts a
// real chain and gateway and pays one request first). Without X402_GATE_URL the tests against
// the gateway are skipped and only the offline ones run.
import { randomBytes } from "node:crypto";

import { X402Client } from "../dist/index.js";

const env = process.env;

export const live = Boolean(env.X402_GATE_URL);
export const skipUnlessLive = live ? false : "X402_GATE_URL is not set: run through `cargo test --test sdks`";

export const gate = live
  ? {
      url: env.X402_GATE_URL,
      adminToken: env.X402_GATE_ADMIN_TOKEN,
      paidTenant: env.X402_GATE_PAID_TENANT,
      paidTx: env.X402_GATE_PAID_TX,
      paidAmount: env.X402_GATE_PAID_AMOUNT,
      payTo: env.X402_GATE_PAY_TO,
      payer: env.X402_GATE_PAYER,
      network: env.X402_GATE_NETWORK,
      deniedNetwork: env.X402_GATE_DENIED_NETWORK,
      payment: JSON.parse(env.X402_GATE_PAYMENT),
      upstream: env.X402_GATE_UPSTREAM,
    }
  : null;

export const admin = () => new X402Client({ baseUrl: gate.url, adminToken: gate.adminToken });
export const asTenant = (apiKey) => new X402Client({ baseUrl: gate.url, apiKey });
export const anyone = () => new X402Client({ baseUrl: gate.url });

export const tag = () => randomBytes(5).toString("hex");

/** A new tenant with a fresh email, through the API. */
export async function newTenant(tier = "free", extra = {}) {
  const t = tag();
  return admin().createTenant({ email: `ts-${t}@sdk.test`, tier, name: `TS ${t}`, ...extra });
}

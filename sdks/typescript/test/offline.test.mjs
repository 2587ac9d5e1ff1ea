// The client's own behaviour against a scripted fetch: retries (GET only), errors by code,
// credentials, paths and bodies.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  ApiError,
  BadGatewayError,
  ERROR_CLASSES,
  PaymentRequiredError,
  ForbiddenError,
  InvalidRouteError,
  NotFoundError,
  ProtocolError,
  RateLimitedError,
  TransportError,
  UnavailableError,
  X402Client,
  errorFromResponse,
} from "../dist/index.js";

const USAGE = {
  tenant: "t",
  tier: "free",
  period: "2026-11",
  verified: 3,
  limit: 1000,
  remaining: 997,
  revenue: [],
  daily: [],
};

const json = (status, body, headers = {}) =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", ...headers } });
const error = (status, code, headers) => json(status, { error: code, message: `${code} happened` }, headers);

/** A fetch that answers from a list in turn and records each request. */
function script(...answers) {
  const requests = [];
  const fetch = async (url, init) => {
    requests.push({ url: new URL(url), ...init });
    const a = answers.shift();
    if (a instanceof Error) throw a;
    return a;
  };
  return { fetch, requests };
}

const client = (s, options = {}) => new X402Client({ baseUrl: "http://gate.test", fetch: s.fetch, backoffMs: 0, ...options });

test("a GET is retried after a 503, a network error and a rate limit", async () => {
  const s = script(error(503, "unavailable"), new TypeError("fetch failed"), error(429, "rate_limited", { "retry-after": "0" }), json(200, USAGE));
  const usage = await client(s, { apiKey: "k", maxRetries: 3 }).getUsage();
  assert.equal(usage.verified, 3);
  assert.equal(s.requests.length, 4);
});

test("retries stop, and the last error is thrown", async () => {
  const s = script(error(503, "unavailable"), error(503, "unavailable"), error(503, "unavailable"));
  await assert.rejects(client(s, { apiKey: "k", maxRetries: 2 }).getUsage(), UnavailableError);
  assert.equal(s.requests.length, 3);
  const t = script(new TypeError("fetch failed"), new TypeError("fetch failed"));
  await assert.rejects(client(t, { maxRetries: 1 }).health(), TransportError);
  assert.equal(t.requests.length, 2);
});

test("POSTs and PATCHes are never retried", async () => {
  for (const call of [
    (c) => c.verifyTransaction({ tx_hash: "0x1", chain: "base", expected_amount: "1", recipient: "0x2" }),
    (c) => c.createKey(),
    (c) => c.updateTenant("t", { name: "n" }),
  ]) {
    const s = script(error(503, "unavailable"), json(200, {}));
    await assert.rejects(call(client(s, { apiKey: "k", adminToken: "a", maxRetries: 5 })), UnavailableError);
    assert.equal(s.requests.length, 1);
  }
  const s = script(new TypeError("fetch failed"));
  await assert.rejects(client(s, { apiKey: "k", maxRetries: 5 }).createKey(), TransportError);
  assert.equal(s.requests.length, 1);
});

test("a quota 429 is not retried; a rate limit carries Retry-After", async () => {
  const s = script(error(429, "tenant_quota_exceeded"), json(200, USAGE));
  const e = await client(s, { apiKey: "k" }).getUsage().catch((e) => e);
  assert.equal(e.code, "tenant_quota_exceeded");
  assert.equal(s.requests.length, 1);
  const r = script(error(429, "rate_limited", { "retry-after": "7" }));
  const limited = await client(r, { apiKey: "k", maxRetries: 0 }).getUsage().catch((e) => e);
  assert.ok(limited instanceof RateLimitedError);
  assert.equal(limited.retryAfter, 7);
});

test("each code throws its class; unknown ones their status class", () => {
  const headers = new Headers({ "x-request-id": "r1" });
  for (const [code, [status, cls]] of Object.entries(ERROR_CLASSES)) {
    const e = errorFromResponse(status, { error: code, message: "m" }, headers);
    assert.equal(e.constructor, cls);
    assert.deepEqual([e.status, e.code, e.message, e.requestId], [status, code, "m", "r1"]);
    assert.equal(e.name, cls.name);
  }
  const fresh = errorFromResponse(403, { error: "brand_new_reason", message: "m" }, new Headers());
  assert.equal(fresh.constructor, ForbiddenError);
  assert.equal(fresh.code, "brand_new_reason");
  const teapot = errorFromResponse(418, { error: "teapot", message: "m" }, new Headers());
  assert.equal(teapot.constructor, ApiError);
  const html = errorFromResponse(502, "<html>bad gateway</html>", new Headers());
  assert.equal(html.constructor, BadGatewayError);
  assert.equal(html.code, null);
  assert.match(html.message, /bad gateway/);
  assert.equal(errorFromResponse(404, { error: "rate_limited", message: "m" }, new Headers()).constructor, NotFoundError);
});

test("each operation sends its credential; paths are escaped; bodies are JSON", async () => {
  const s = script(json(200, []), json(200, []), json(200, { payments: [], next_before: null }), json(200, { payments: [] }), json(200, { status: "ok" }), error(404, "not_found"));
  const both = client(s, { apiKey: "x402_live_k", adminToken: "adm" });
  await both.listTenants();
  await both.listKeys();
  await both.listPayments({ tenant: "t", limit: 5 });
  await client(s, { apiKey: "x402_live_k" }).listPayments();
  await both.health();
  await assert.rejects(both.updateTenant("a/b c", { tier: "pro" }), NotFoundError);
  const [tenants, keys, payAdmin, payKey, health, patch] = s.requests;
  assert.equal(tenants.headers["x-admin-key"], "adm");
  assert.equal(tenants.headers.authorization, undefined);
  assert.equal(keys.headers.authorization, "Bearer x402_live_k");
  assert.equal(keys.headers["x-admin-key"], undefined);
  assert.equal(payAdmin.headers["x-admin-key"], "adm");
  assert.deepEqual(Object.fromEntries(payAdmin.url.searchParams), { tenant: "t", limit: "5" });
  assert.equal(payKey.headers.authorization, "Bearer x402_live_k");
  assert.equal(health.headers.authorization ?? health.headers["x-admin-key"], undefined);
  assert.equal(patch.method, "PATCH");
  assert.equal(patch.url.pathname, "/api/v1/x402/admin/tenants/a%2Fb%20c");
  assert.deepEqual(JSON.parse(patch.body), { tier: "pro" });
  assert.equal(patch.headers["content-type"], "application/json");
});

test("ready returns not_ready instead of throwing; a non-JSON success is a ProtocolError", async () => {
  const body = { status: "not_ready", reasons: ["store: down"], warnings: [], store: { ok: false, error: "down" }, networks: [] };
  const s = script(json(503, body), new Response("ok", { status: 200 }));
  const c = client(s, { maxRetries: 3 });
  assert.equal((await c.ready()).status, "not_ready");
  assert.equal(s.requests.length, 1);
  await assert.rejects(c.health(), ProtocolError);
});

test("a refused reload resolves with its report; a 503 error body throws", async () => {
  const report = {
    result: "invalid",
    file: "/etc/x402-gate/production.toml",
    applied: [],
    restart_required: [{ path: "server.threads", reason: "bound at start" }],
    errors: [{ path: "routes[0].price", message: "not a price" }],
  };
  const s = script(json(422, report), error(503, "unavailable"));
  const c = client(s, { adminToken: "a" });
  const r = await c.reloadConfig();
  assert.deepEqual([r.result, r.errors[0].path, r.restart_required[0].path], ["invalid", "routes[0].price", "server.threads"]);
  await assert.rejects(c.reloadConfig(), UnavailableError);
  assert.equal(s.requests[0].headers["x-admin-key"], "a");
  assert.equal(s.requests[0].method, "POST");
});

test("a 204 resolves with nothing; an invalid route carries its fields", async () => {
  const s = script(
    new Response(null, { status: 204 }),
    json(400, { error: "invalid_route", message: "price: bad", fields: [{ field: "price", message: "bad" }] }),
  );
  const c = client(s, { apiKey: "k" });
  assert.equal(await c.deleteRoute("r_1"), undefined);
  assert.equal(s.requests[0].method, "DELETE");
  const e = await c.createRoute({ price: "x" }).catch((e) => e);
  assert.ok(e instanceof InvalidRouteError);
  assert.deepEqual(e.fields, [{ field: "price", message: "bad" }]);
});

test("a plan upgrade answers 402 with its challenge, then takes the payment", async () => {
  const challenge = { x402Version: 2, error: "Payment required", accepts: [{ scheme: "exact", amount: "5000000" }] };
  const header = btoa(JSON.stringify(challenge));
  const upgraded = { tenant: "t", tier: "pro", paid_until: 1, transaction: "0xab", network: "eip155:8453", payer: "0x1" };
  const s = script(json(402, {}, { "payment-required": header }), json(200, upgraded));
  const c = client(s, { apiKey: "k" });
  const e = await c.upgradePlan({ tier: "pro" }).catch((e) => e);
  assert.ok(e instanceof PaymentRequiredError);
  assert.equal(e.status, 402);
  assert.equal(e.accepts[0].amount, "5000000");
  assert.equal(e.message, "Payment required");
  const done = await c.upgradePlan({ tier: "pro" }, { paymentSignature: "c2lnbmVk" });
  assert.equal(done.transaction, "0xab");
  assert.equal(s.requests[0].headers["payment-signature"], undefined);
  assert.equal(s.requests[1].headers["payment-signature"], "c2lnbmVk");
  assert.deepEqual(JSON.parse(s.requests[1].body), { tier: "pro" });
});

test("a request that takes longer than timeoutMs is a TransportError", async () => {
  // A server that never answers (the timer keeps the test's event loop alive meanwhile).
  const slow = (url, init) =>
    new Promise((_, reject) => {
      const never = setTimeout(() => reject(new Error("not aborted")), 5000);
      init.signal.addEventListener("abort", () => {
        clearTimeout(never);
        reject(init.signal.reason);
      });
    });
  const c = new X402Client({ baseUrl: "http://gate.test", fetch: slow, timeoutMs: 20, maxRetries: 0 });
  await assert.rejects(c.health(), TransportError);
});

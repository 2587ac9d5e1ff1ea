// The SDK against the real gateway (started by tests/sdks.rs with a real chain, after one paid
// request): tenants, keys, usage, payments, verification, and each kind of error.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  ApiError,
  BadRequestError,
  BillingDisabledError,
  ConfigRouteError,
  ForbiddenError,
  InsufficientScopeError,
  InvalidRouteError,
  KeyNotLiveError,
  NamespaceTakenError,
  NetworkNotAllowedError,
  NotFoundError,
  QuotaExceededError,
  ReloadUnavailableError,
  ScopeNotHeldError,
  TenantExistsError,
  TenantSuspendedError,
  TooManyRequestsError,
  UnauthorizedError,
  ValidationError,
} from "../dist/index.js";
import { admin, anyone, asTenant, gate, newTenant, skipUnlessLive, tag } from "./helpers.mjs";

const ALL_SCOPES = ["verify", "usage:read", "keys:write", "payments:read", "routes:write"].sort();

/** Asserts `promise` rejects with `cls`, and the status and code given; returns the error. */
async function rejects(promise, cls, status, code) {
  let error;
  await assert.rejects(promise, (e) => {
    error = e;
    return true;
  });
  assert.ok(error instanceof cls, `expected ${cls.name}, got ${error?.name}: ${error?.message}`);
  assert.ok(error instanceof ApiError);
  if (status !== undefined) assert.equal(error.status, status);
  if (code !== undefined) assert.equal(error.code, code);
  return error;
}

const paidTx = (client, chain = gate.network, amount = gate.paidAmount) =>
  client.verifyTransaction({ tx_hash: gate.paidTx, chain, expected_amount: amount, recipient: gate.payTo });

describe("against the real gateway", { skip: skipUnlessLive }, () => {
  test("health and readiness", async () => {
    assert.equal((await anyone().health()).status, "ok");
    const ready = await anyone().ready();
    assert.notEqual(ready.status, "not_ready", JSON.stringify(ready));
    assert.equal(ready.store.ok, true);
    const net = ready.networks.find((n) => n.network === gate.network);
    assert.equal(net.rpc_ok, true);
    assert.equal(typeof net.block, "number");
  });

  test("create, get, list, update, suspend and activate a tenant", async () => {
    const created = await newTenant("starter", { pay_to: { [gate.network]: gate.payTo } });
    const t = created.tenant;
    assert.deepEqual([t.tier, t.status, t.source], ["starter", "active", "api"]);
    assert.deepEqual(t.pay_to, { [gate.network]: gate.payTo });
    assert.match(created.api_key.key, /^x402_live_[0-9a-f]{48}$/);
    assert.deepEqual([...created.api_key.scopes].sort(), ALL_SCOPES);

    const a = admin();
    assert.deepEqual(await a.getTenant(t.id), t);
    const ids = (await a.listTenants()).map((x) => x.id);
    assert.ok(ids.includes(t.id) && ids.includes(gate.paidTenant));
    const updated = await a.updateTenant(t.id, { name: "Renamed", tier: "free" });
    assert.deepEqual([updated.name, updated.tier], ["Renamed", "free"]);
    assert.equal((await a.suspendTenant(t.id)).status, "suspended");
    const e = await rejects(paidTx(asTenant(created.api_key.key)), TenantSuspendedError, 403, "tenant_suspended");
    assert.ok(e instanceof ForbiddenError);
    assert.equal((await a.activateTenant(t.id)).status, "active");
  });

  test("usage and payments after a real payment", async () => {
    const a = admin();
    const key = await a.createTenantKey(gate.paidTenant, { scopes: ["usage:read", "payments:read"] });
    assert.deepEqual(key.scopes, ["usage:read", "payments:read"]);
    const me = asTenant(key.key);
    const usage = await me.getUsage();
    assert.equal(usage.tenant, gate.paidTenant);
    assert.equal(usage.tier, "free");
    assert.ok(usage.verified >= 1);
    assert.equal(usage.limit, 1000);
    assert.equal(usage.remaining, usage.limit - usage.verified);
    assert.match(usage.period, /^\d{4}-\d{2}$/);
    const paid = usage.revenue.find((r) => r.route === "/paid/*" && r.network === gate.network);
    assert.ok(paid && paid.payments >= 1);
    assert.ok(BigInt(paid.amount) >= BigInt(gate.paidAmount));
    assert.ok(usage.daily.reduce((n, d) => n + d.payments, 0) >= 1);

    const page = await me.listPayments();
    const mine = page.payments.filter((p) => p.tx_hash === gate.paidTx);
    assert.equal(mine.length, 1, JSON.stringify(page));
    const p = mine[0];
    assert.deepEqual([p.status, p.tenant, p.amount, p.network], ["settled", gate.paidTenant, gate.paidAmount, gate.network]);
    assert.equal(p.payer.toLowerCase(), gate.payer.toLowerCase());
    await rejects(me.listPayments({ tenant: "someone-else" }), NotFoundError, 404);

    assert.equal((await a.getUsage({ tenant: gate.paidTenant })).verified, usage.verified);
    await rejects(a.getUsage(), BadRequestError, 400);
    const tiers = Object.fromEntries((await a.listTiers()).map((t) => [t.name, t]));
    assert.equal(tiers.free.monthly_verifications, 1000);
    assert.deepEqual([tiers.tiny.monthly_verifications, tiers.tiny.networks], [1, [gate.network]]);

    const one = await a.listPayments({ tenant: gate.paidTenant, status: "settled", limit: 1 });
    assert.equal(one.payments.length, 1);
    const every = [];
    for await (const x of a.iterPayments({ tenant: gate.paidTenant }, 1)) every.push(x);
    assert.ok(every.some((x) => x.tx_hash === gate.paidTx));
    assert.deepEqual(every.map((x) => x.id), every.map((x) => x.id).sort((x, y) => y - x));
  });

  test("verify a payment payload", async () => {
    const created = await newTenant();
    const me = asTenant(created.api_key.key);
    const { paymentPayload, paymentRequirements } = gate.payment;
    const result = await me.verifyPayment({ x402Version: 2, paymentPayload, paymentRequirements });
    assert.equal(result.isValid, true, JSON.stringify(result));
    assert.equal(result.cached, false);
    assert.equal(result.payer.toLowerCase(), gate.payer.toLowerCase());
    assert.equal(result.amount, paymentRequirements.amount);
    const again = await me.verifyPayment({ paymentPayload, paymentRequirements });
    assert.deepEqual([again.isValid, again.cached], [true, true]);
    const bad = await me.verifyPayment({ paymentPayload, paymentRequirements: { ...paymentRequirements, amount: "1" } });
    assert.deepEqual([bad.isValid, bad.invalidReason], [false, "no_matching_payment_requirements"]);
    assert.equal((await me.getUsage()).verified, 1);
  });

  test("verify a transaction, once per tenant", async () => {
    const me = asTenant((await newTenant()).api_key.key);
    const result = await paidTx(me);
    assert.equal(result.isValid, true, JSON.stringify(result));
    assert.equal(result.amount, gate.paidAmount);
    assert.equal(result.payer.toLowerCase(), gate.payer.toLowerCase());
    const again = await paidTx(me);
    assert.deepEqual([again.isValid, again.invalidReason], [false, "tx_already_used"]);
    const nowhere = await me.verifyTransaction({
      tx_hash: "0x" + "cd".repeat(32),
      chain: "base-sepolia",
      expected_amount: "1",
      recipient: gate.payTo,
    });
    assert.equal(nowhere.invalidReason, "tx_not_found");
  });

  test("create, list, rotate and revoke keys", async () => {
    const created = await newTenant();
    const first = created.api_key;
    const me = asTenant(first.key);
    const reader = await me.createKey({ scopes: ["usage:read"], expires_in_seconds: 3600 });
    assert.deepEqual(reader.scopes, ["usage:read"]);
    assert.ok(reader.expires_at > reader.created_at);
    const full = await me.createKey();
    assert.deepEqual([...full.scopes].sort(), ALL_SCOPES);
    const listed = new Map((await me.listKeys()).map((k) => [k.id, k]));
    for (const k of [first, reader, full]) assert.ok(listed.has(k.id));
    assert.equal(typeof listed.get(first.id).last_used_at, "number");

    // No grace: the old key stops at once.
    const rotated = await me.rotateKey(reader.id, { grace_seconds: 0 });
    assert.equal(rotated.old_key.replaced_by, rotated.new_key.id);
    assert.deepEqual(rotated.new_key.scopes, ["usage:read"]);
    assert.equal(rotated.new_key.expires_at, reader.expires_at);
    assert.equal((await asTenant(rotated.new_key.key).getUsage()).tenant, created.tenant.id);
    await rejects(asTenant(reader.key).getUsage(), UnauthorizedError, 401, "unauthorized");
    await rejects(me.rotateKey(reader.id), KeyNotLiveError, 409, "key_not_live");

    // Default grace: both work for now.
    const graced = await me.rotateKey(full.id);
    assert.equal(typeof graced.old_key.expires_at, "number");
    for (const k of [full.key, graced.new_key.key]) {
      assert.equal((await asTenant(k).getUsage()).tenant, created.tenant.id);
    }
    const revoked = await me.revokeKey(graced.new_key.id);
    assert.equal(typeof revoked.revoked_at, "number");
    await rejects(asTenant(graced.new_key.key).getUsage(), UnauthorizedError, 401);

    // The operator's side.
    const a = admin();
    const opKey = await a.createTenantKey(created.tenant.id, { scopes: ["verify"] });
    assert.ok((await a.listTenantKeys(created.tenant.id)).some((k) => k.id === opKey.id));
    const opRotated = await a.rotateTenantKey(opKey.id, { grace_seconds: 60 });
    assert.deepEqual(opRotated.new_key.scopes, ["verify"]);
    assert.equal(typeof (await a.revokeTenantKey(opRotated.new_key.id)).revoked_at, "number");
    await rejects(paidTx(asTenant(opRotated.new_key.key)), UnauthorizedError, 401);
  });

  test("routes and namespaces", async () => {
    const created = await newTenant("free", { pay_to: { [gate.network]: gate.payTo } });
    const tid = created.tenant.id;
    const a = admin();
    assert.deepEqual(await a.setNamespace(tid, { path_prefix: `/${tid}` }), { hosts: [], path_prefix: `/${tid}` });
    const me = asTenant(created.api_key.key);
    const route = await me.createRoute({ path: `/${tid}/data/*`, upstream: gate.upstream, price: "$0.01" });
    assert.deepEqual([route.tenant, route.source, route.price, route.served], [tid, "api", "$0.01", true]);
    assert.match(route.id, /^r_/);
    assert.ok((await me.listRoutes()).routes.some((r) => r.id === route.id));
    const changed = await me.updateRoute(route.id, { price: "$0.02", settle: "before" });
    assert.deepEqual([changed.price, changed.settle], ["$0.02", "before"]);

    const invalid = await rejects(
      me.createRoute({ path: `/${tid}/x`, upstream: gate.upstream, price: "lots" }),
      InvalidRouteError,
      400,
      "invalid_route",
    );
    assert.ok(invalid.fields.some((f) => f.field === "price"), JSON.stringify(invalid.fields));
    assert.ok(invalid instanceof BadRequestError);
    await rejects(me.createRoute({ path: "/elsewhere/*", upstream: gate.upstream, price: "$0.01" }), InvalidRouteError, 400);

    assert.equal(await me.deleteRoute(route.id), undefined);
    await rejects(me.deleteRoute(route.id), NotFoundError, 404);

    const fromFile = (await a.listRoutes({ tenant: gate.paidTenant })).routes.filter((r) => r.source === "config");
    assert.equal(fromFile[0].path, "/paid/*");
    await rejects(a.updateRoute(fromFile[0].id, { price: "$9" }), ConfigRouteError, 403, "config_route");
    const made = await a.createRoute({ tenant: tid, path: `/${tid}/op`, upstream: gate.upstream, price: "free" });
    assert.equal(made.tenant, tid);
    await a.deleteRoute(made.id);

    const other = await newTenant();
    await rejects(a.setNamespace(other.tenant.id, { path_prefix: `/${tid}` }), NamespaceTakenError, 409, "namespace_taken");
  });

  test("billing, without plans on sale", async () => {
    const me = asTenant((await newTenant("starter")).api_key.key);
    const info = await me.getBilling();
    assert.deepEqual([info.tier, info.x402_prices, info.stripe_tiers], ["starter", {}, []]);
    await rejects(me.checkout({ tier: "pro" }), BillingDisabledError, 404, "billing_disabled");
    await rejects(me.upgradePlan({ tier: "pro" }), BillingDisabledError, 404, "billing_disabled");
  });

  test("supported chains, with and without a key", async () => {
    const open = await anyone().getSupportedChains();
    assert.equal(open.tier, undefined);
    const net = open.chains.find((c) => c.network === gate.network);
    assert.equal(net.v1_name, "base-sepolia");
    assert.equal(net.assets[0].decimals, 6);
    assert.equal(net.allowed, undefined);
    const mine = await asTenant((await newTenant()).api_key.key).getSupportedChains();
    assert.equal(mine.tier, "free");
    const allowed = Object.fromEntries(mine.chains.map((c) => [c.network, c.allowed]));
    assert.equal(allowed[gate.network], true);
    assert.equal(allowed[gate.deniedNetwork], false);
  });

  test("each kind of error", async () => {
    // 401.
    const wrongAdmin = new (admin().constructor)({ baseUrl: gate.url, adminToken: "not-the-token" });
    const e401 = await rejects(wrongAdmin.listTenants(), UnauthorizedError, 401, "unauthorized");
    assert.ok(e401.message && e401.requestId);
    await rejects(asTenant("x402_live_" + "0".repeat(48)).getUsage(), UnauthorizedError, 401);
    await rejects(anyone().createKey(), UnauthorizedError, 401);
    await rejects(anyone().getTenant(gate.paidTenant), UnauthorizedError, 401);

    const a = admin();
    const created = await newTenant();
    // 403 insufficient_scope.
    const reader = await a.createTenantKey(created.tenant.id, { scopes: ["usage:read"] });
    await rejects(paidTx(asTenant(reader.key)), InsufficientScopeError, 403, "insufficient_scope");
    await rejects(asTenant(reader.key).listKeys(), InsufficientScopeError, 403);
    // 403 scope_not_held.
    const writer = await a.createTenantKey(created.tenant.id, { scopes: ["keys:write"] });
    const held = await rejects(
      asTenant(writer.key).createKey({ scopes: ["keys:write", "verify"] }),
      ScopeNotHeldError,
      403,
      "scope_not_held",
    );
    assert.match(held.message, /verify/);
    // 403 network_not_allowed.
    await rejects(
      paidTx(asTenant(created.api_key.key), gate.deniedNetwork, "1"),
      NetworkNotAllowedError,
      403,
      "network_not_allowed",
    );

    // 404.
    await rejects(a.getTenant("no-such-tenant-" + tag()), NotFoundError, 404, "not_found");
    await rejects(a.revokeTenantKey("key_does_not_exist"), NotFoundError, 404);
    const other = await newTenant();
    await rejects(asTenant(created.api_key.key).revokeKey(other.api_key.id), NotFoundError, 404);

    // 400.
    await rejects(a.createTenant({ email: "not-an-email", tier: "free" }), BadRequestError, 400, "bad_request");
    const tier = await rejects(a.createTenant({ email: "x@sdk.test", tier: "platinum" }), ValidationError, 400);
    assert.match(tier.message, /unknown tier/);
    const life = await rejects(a.createTenantKey(created.tenant.id, { expires_in_seconds: 0 }), BadRequestError, 400);
    assert.match(life.message, /expires_in_seconds/);
    await rejects(a.listPayments({ limit: 0 }), BadRequestError, 400);
    await rejects(paidTx(asTenant(created.api_key.key), "not-a-chain", "1"), BadRequestError, 400);
    // A field the API does not know is refused, not ignored (the types would not allow it).
    await rejects(a.createTenantKey(created.tenant.id, { scope: ["verify"] }), BadRequestError, 400);

    // 409: a reload of a gateway not started from a file (the test's gateway was not).
    await rejects(a.reloadConfig(), ReloadUnavailableError, 409, "reload_unavailable");
    await rejects(
      a.createTenant({ email: "again@sdk.test", tier: "free", id: created.tenant.id }),
      TenantExistsError,
      409,
      "tenant_exists",
    );
  });

  test("the monthly quota is a 429", async () => {
    // The gateway's `tiny` tier allows one verified payment a month.
    const me = asTenant((await newTenant("tiny")).api_key.key);
    assert.equal((await paidTx(me)).isValid, true);
    const e = await rejects(me.verifyPayment(gate.payment), QuotaExceededError, 429, "tenant_quota_exceeded");
    assert.ok(e instanceof TooManyRequestsError);
    const usage = await me.getUsage();
    assert.deepEqual([usage.verified, usage.limit, usage.remaining], [1, 1, 0]);
  });
});

// The client of the x402-gate management API, over `fetch` (Node 20+, browsers, Deno, Bun).
//
// Every request and answer type comes from src/schema.ts, generated from the OpenAPI document the
// gateway serves; each method names its operation by path and method in OPERATIONS, typed
// against that schema, so a path, a body or an answer that changes in the document fails the
// build until the client follows.

import {
  ProtocolError,
  TransportError,
  X402Error,
  errorFromResponse,
} from "./errors.js";
import type { components, paths } from "./schema.js";

type Schemas = components["schemas"];

/** A tenant: an API provider with payout addresses, a tier and a status. */
export type Tenant = Schemas["TenantView"];
/** An API key as listed (its secret is never shown again). */
export type ApiKey = Schemas["KeyView"];
/** A key just minted: `key` is its secret (`x402_live_…`), shown this once. */
export type NewKey = Schemas["NewKey"];
/** A new tenant and its first API key (holding every scope). */
export type CreatedTenant = Schemas["CreatedTenant"];
/** A rotation: the new key, and the old one (working until its `expires_at`). */
export type RotatedKey = Schemas["RotatedKey"];
/** A payment in the ledger. */
export type Payment = Schemas["PaymentView"];
/** A page of payments, newest first. */
export type PaymentsPage = Schemas["PaymentsPage"];
/** The verify API's answer. */
export type VerificationResult = Schemas["VerifyResult"];
/** A tenant's usage this UTC month. */
export type Usage = Schemas["UsageView"];
export type Revenue = Schemas["RevenueView"];
export type DailyUsage = Schemas["DayView"];
/** The networks and assets the gateway accepts. */
export type SupportedChains = Schemas["SupportedChains"];
export type Chain = Schemas["ChainView"];
export type Asset = Schemas["AssetView"];
export type HealthStatus = Schemas["Status"];
/** `/ready`'s answer: `ready`, `degraded` (serving, with warnings) or `not_ready`. */
export type Readiness = Schemas["Readiness"];
/** A tenant's plan, how it is billed, and the plans on sale. */
export type BillingInfo = Schemas["BillingView"];
/** A Stripe Checkout session: send the tenant to `url`. */
export type CheckoutSession = Schemas["CheckoutView"];
/** A plan paid with x402: the new tier, until when, and the settlement. */
export type PlanUpgrade = Schemas["UpgradeView"];
/** A plan of the gateway's config. */
export type Tier = Schemas["TierView"];
/** A route: where it comes from (`id`, `tenant`, `source`, `served`), beside its fields as a
 * `[[routes]]` entry writes them (`path`, `upstream`, `price`, …). */
export type Route = Schemas["RouteView"];
export type RouteList = Schemas["RouteList"];
/** Where a tenant's routes may live: host names, and a path prefix for host-less routes. */
export type Namespace = Schemas["NamespaceBody"];
/** A route's fields, as a `[[routes]]` entry writes them (`path`, `upstream`, `price`, …). */
export type RouteSpec = Record<string, unknown>;
/** What a config reload did: `applied`, `invalid` (with the file's `errors`) or `failed`. */
export type ReloadReport = Schemas["ReloadReport"];
export type CreateTenantRequest = Schemas["CreateTenantRequest"];
export type UpdateTenantRequest = Schemas["UpdateTenantRequest"];
export type CreateKeyRequest = Schemas["CreateKeyRequest"];
export type RotateKeyRequest = Schemas["RotateKeyRequest"];
export type VerifyPaymentRequest = Schemas["VerifyPaymentRequest"];
export type VerifyTransactionRequest = Schemas["VerifyTransactionRequest"];
export type PaymentsQuery = NonNullable<paths["/api/v1/x402/admin/payments"]["get"]["parameters"]["query"]>;

/** Who authenticates an operation. */
export type Auth = "admin" | "key" | "admin_or_key" | "optional_key" | "none";

type Method = "get" | "post" | "patch" | "put" | "delete";

interface OperationSpec<P extends keyof paths = keyof paths, M extends Method = Method> {
  readonly operationId: string;
  readonly method: M;
  readonly path: P;
  readonly auth: Auth;
}

/** Every operation the client calls, by method name: checked against the document at build
 * time (path and method exist in `paths`) and by the tests (the served document's operations
 * are exactly these, with the same credentials). */
export const OPERATIONS = {
  createTenant: { operationId: "create_tenant", method: "post", path: "/api/v1/x402/admin/create-tenant", auth: "admin" },
  listTenants: { operationId: "list_tenants", method: "get", path: "/api/v1/x402/admin/tenants", auth: "admin" },
  getTenant: { operationId: "get_tenant", method: "get", path: "/api/v1/x402/admin/tenants/{id}", auth: "admin" },
  updateTenant: { operationId: "update_tenant", method: "patch", path: "/api/v1/x402/admin/tenants/{id}", auth: "admin" },
  suspendTenant: { operationId: "suspend_tenant", method: "post", path: "/api/v1/x402/admin/tenants/{id}/suspend", auth: "admin" },
  activateTenant: { operationId: "activate_tenant", method: "post", path: "/api/v1/x402/admin/tenants/{id}/activate", auth: "admin" },
  createTenantKey: { operationId: "admin_create_key", method: "post", path: "/api/v1/x402/admin/tenants/{id}/keys", auth: "admin" },
  listTenantKeys: { operationId: "admin_list_keys", method: "get", path: "/api/v1/x402/admin/tenants/{id}/keys", auth: "admin" },
  rotateTenantKey: { operationId: "admin_rotate_key", method: "post", path: "/api/v1/x402/admin/keys/{key_id}/rotate", auth: "admin" },
  revokeTenantKey: { operationId: "admin_revoke_key", method: "post", path: "/api/v1/x402/admin/keys/{key_id}/revoke", auth: "admin" },
  listPayments: { operationId: "list_payments", method: "get", path: "/api/v1/x402/admin/payments", auth: "admin_or_key" },
  createKey: { operationId: "own_create_key", method: "post", path: "/api/v1/x402/keys", auth: "key" },
  listKeys: { operationId: "own_list_keys", method: "get", path: "/api/v1/x402/keys", auth: "key" },
  rotateKey: { operationId: "own_rotate_key", method: "post", path: "/api/v1/x402/keys/{key_id}/rotate", auth: "key" },
  revokeKey: { operationId: "own_revoke_key", method: "post", path: "/api/v1/x402/keys/{key_id}/revoke", auth: "key" },
  verifyPayment: { operationId: "verify", method: "post", path: "/api/v1/x402/verify", auth: "key" },
  verifyTransaction: { operationId: "verify", method: "post", path: "/api/v1/x402/verify", auth: "key" },
  getUsage: { operationId: "usage", method: "get", path: "/api/v1/x402/usage", auth: "admin_or_key" },
  listTiers: { operationId: "list_tiers", method: "get", path: "/api/v1/x402/admin/tiers", auth: "admin" },
  getSupportedChains: { operationId: "supported_chains", method: "get", path: "/api/v1/x402/supported-chains", auth: "optional_key" },
  health: { operationId: "health", method: "get", path: "/health", auth: "none" },
  ready: { operationId: "ready", method: "get", path: "/ready", auth: "none" },
  reloadConfig: { operationId: "reload_config", method: "post", path: "/api/v1/x402/admin/reload", auth: "admin" },
  listRoutes: { operationId: "list_routes", method: "get", path: "/api/v1/x402/routes", auth: "admin_or_key" },
  createRoute: { operationId: "create_route", method: "post", path: "/api/v1/x402/routes", auth: "admin_or_key" },
  updateRoute: { operationId: "update_route", method: "patch", path: "/api/v1/x402/routes/{id}", auth: "admin_or_key" },
  deleteRoute: { operationId: "delete_route", method: "delete", path: "/api/v1/x402/routes/{id}", auth: "admin_or_key" },
  getBilling: { operationId: "billing", method: "get", path: "/api/v1/x402/billing", auth: "key" },
  checkout: { operationId: "checkout", method: "post", path: "/api/v1/x402/billing/checkout", auth: "key" },
  upgradePlan: { operationId: "upgrade", method: "post", path: "/api/v1/x402/billing/upgrade", auth: "key" },
  setNamespace: { operationId: "set_namespace", method: "put", path: "/api/v1/x402/admin/tenants/{id}/namespace", auth: "admin" },
} as const satisfies Record<string, OperationSpec>;

/** Operations of the document that are not client calls, and why. */
export const EXCLUDED_OPERATIONS: Readonly<Record<string, string>> = {
  stripe_webhook: "Stripe calls it, with events signed by the webhook secret",
};

// Every entry's method must be one the document has for its path.
type Checked<T> = { [K in keyof T]: T[K] extends { path: infer P extends keyof paths; method: infer M extends Method }
  ? paths[P][M] extends never | undefined ? never : T[K]
  : never };
const _checked: Checked<typeof OPERATIONS> = OPERATIONS;
void _checked;

type Operation<P extends keyof paths, M extends Method> = NonNullable<paths[P][M]>;
type JsonOf<C> = C extends { content: { "application/json": infer T } } ? T : never;
/** The answer of an operation: its 200 or 201 JSON body. */
type Answer<O> = O extends { responses: infer R }
  ? R extends { 200: infer A } ? JsonOf<A> : R extends { 201: infer A } ? JsonOf<A> : never
  : never;
type BodyOf<O> = O extends { requestBody?: { content: { "application/json": infer B } } } ? B : never;
type PathParams<O> = O extends { parameters: { path: infer P } } ? P : never;
type QueryOf<O> = O extends { parameters: { query?: infer Q } } ? Q : never;

interface CallArgs<O> {
  path?: PathParams<O>;
  query?: QueryOf<O>;
  body?: BodyOf<O>;
  headers?: Record<string, string>;
}

export interface X402ClientOptions {
  /** The management listener (`server.admin_listen`). Default `http://127.0.0.1:8403`. */
  baseUrl?: string;
  /** A tenant's API key (`x402_live_…`): its own keys, usage, payments and the verify API. */
  apiKey?: string;
  /** The operator's `admin.token`: tenants, and any tenant's keys and payments. */
  adminToken?: string;
  /** Milliseconds for each request. Default 30000. */
  timeoutMs?: number;
  /** How many times a GET is retried after a transient failure. Default 2. */
  maxRetries?: number;
  /** The first retry's delay in ms; it doubles each retry (with jitter). Default 250. */
  backoffMs?: number;
  /** The longest delay between retries, in ms. Default 8000. */
  maxBackoffMs?: number;
  /** Extra headers sent with every request. */
  headers?: Record<string, string>;
  /** A `fetch` to use instead of the global one (a mock in tests, a proxy-aware one, …). */
  fetch?: typeof fetch;
}

const RETRY_STATUSES = new Set([502, 503, 504]);

export const DEFAULT_BASE_URL = "http://127.0.0.1:8403";

/**
 * A client of the x402-gate management API.
 *
 * Only GET requests are retried (on a network error, a timeout, a 502/503/504, or a 429 that says
 * when to come back), with exponential backoff and jitter: a POST or a PATCH is sent once, so a
 * verification, a new key or a rotation never happens twice behind the caller's back.
 *
 * ```ts
 * const admin = new X402Client({ baseUrl: "http://127.0.0.1:8403", adminToken: "…" });
 * const { tenant, api_key } = await admin.createTenant({ email: "dev@newco.test", tier: "starter" });
 * ```
 */
export class X402Client {
  readonly baseUrl: string;
  readonly apiKey: string | undefined;
  readonly adminToken: string | undefined;
  readonly timeoutMs: number;
  readonly maxRetries: number;
  readonly backoffMs: number;
  readonly maxBackoffMs: number;
  readonly #headers: Record<string, string>;
  readonly #fetch: typeof fetch;

  constructor(options: X402ClientOptions = {}) {
    this.baseUrl = (options.baseUrl ?? DEFAULT_BASE_URL).replace(/\/+$/, "");
    this.apiKey = options.apiKey;
    this.adminToken = options.adminToken;
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.maxRetries = options.maxRetries ?? 2;
    this.backoffMs = options.backoffMs ?? 250;
    this.maxBackoffMs = options.maxBackoffMs ?? 8_000;
    this.#headers = { accept: "application/json", ...options.headers };
    this.#fetch = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
  }

  // Tenants (operator).

  /** Creates a tenant and its first API key (every scope; the secret is in `api_key.key`, shown
   * this once). Throws `BadRequestError` (bad email, unknown tier, bad address or id) or
   * `TenantExistsError`. */
  createTenant(request: CreateTenantRequest): Promise<CreatedTenant> {
    return this.#call(OPERATIONS.createTenant, { body: request });
  }

  /** Every tenant, from the config and the API. */
  listTenants(): Promise<Tenant[]> {
    return this.#call(OPERATIONS.listTenants, {});
  }

  /** One tenant; `NotFoundError` if there is none with that id. */
  getTenant(id: string): Promise<Tenant> {
    return this.#call(OPERATIONS.getTenant, { path: { id } });
  }

  /** Changes a tenant's name, tier or payout addresses (`pay_to` replaces them all). Challenges
   * and quotas follow at once. */
  updateTenant(id: string, changes: UpdateTenantRequest): Promise<Tenant> {
    return this.#call(OPERATIONS.updateTenant, { path: { id }, body: changes });
  }

  /** Suspends a tenant: its priced routes answer 403 `tenant_suspended`. */
  suspendTenant(id: string): Promise<Tenant> {
    return this.#call(OPERATIONS.suspendTenant, { path: { id } });
  }

  /** Lifts a suspension. */
  activateTenant(id: string): Promise<Tenant> {
    return this.#call(OPERATIONS.activateTenant, { path: { id } });
  }

  // Any tenant's keys (operator).

  /** Mints a key for a tenant (by default every scope, never expiring). */
  createTenantKey(id: string, request: CreateKeyRequest = {}): Promise<NewKey> {
    return this.#call(OPERATIONS.createTenantKey, { path: { id }, body: request });
  }

  /** A tenant's keys, live, expired and revoked (never their secrets). */
  listTenantKeys(id: string): Promise<ApiKey[]> {
    return this.#call(OPERATIONS.listTenantKeys, { path: { id } });
  }

  /** Rotates any tenant's key: a new key with the same scopes and expiry; the old one keeps
   * working for `grace_seconds` (default 86400, 0 for none). */
  rotateTenantKey(keyId: string, request: RotateKeyRequest = {}): Promise<RotatedKey> {
    return this.#call(OPERATIONS.rotateTenantKey, { path: { key_id: keyId }, body: request });
  }

  /** Revokes any tenant's key, at once. */
  revokeTenantKey(keyId: string): Promise<ApiKey> {
    return this.#call(OPERATIONS.revokeTenantKey, { path: { key_id: keyId } });
  }

  // Payments (operator, or a key with payments:read).

  /** A page of the payments ledger, newest first (`limit` 1-500, default 50). With an API key,
   * only the key's tenant's. Pass `next_before` as `before` for the next page, or use
   * `iterPayments`. */
  listPayments(query: PaymentsQuery = {}): Promise<PaymentsPage> {
    return this.#call(OPERATIONS.listPayments, { query });
  }

  /** Every payment matching the filters, newest first, fetched a page at a time. */
  async *iterPayments(
    query: Omit<PaymentsQuery, "before" | "limit"> = {},
    pageSize = 100,
  ): AsyncGenerator<Payment> {
    let before: number | undefined;
    for (;;) {
      const page = await this.listPayments({ ...query, before, limit: pageSize });
      yield* page.payments;
      if (page.next_before == null) return;
      before = page.next_before;
    }
  }

  // The tenant's own keys (a key with keys:write).

  /** Mints a key for the caller's tenant, by default with the caller's scopes (asking for one it
   * does not hold throws `ScopeNotHeldError`). */
  createKey(request: CreateKeyRequest = {}): Promise<NewKey> {
    return this.#call(OPERATIONS.createKey, { body: request });
  }

  /** The caller's tenant's keys. */
  listKeys(): Promise<ApiKey[]> {
    return this.#call(OPERATIONS.listKeys, {});
  }

  /** Rotates one of the tenant's keys (see `rotateTenantKey`). */
  rotateKey(keyId: string, request: RotateKeyRequest = {}): Promise<RotatedKey> {
    return this.#call(OPERATIONS.rotateKey, { path: { key_id: keyId }, body: request });
  }

  /** Revokes one of the tenant's keys, at once (it may be the caller's own). */
  revokeKey(keyId: string): Promise<ApiKey> {
    return this.#call(OPERATIONS.revokeKey, { path: { key_id: keyId } });
  }

  // The verify API (a key with verify).

  /** Verifies an x402 payment payload against the requirements it pays (the facilitator
   * `/verify` shape), for the caller's tenant. A valid answer counts toward the monthly quota; a
   * cached repeat (`cached: true`) does not. An invalid payment is an answer (`isValid: false`
   * with `invalidReason`), not an exception. Throws `QuotaExceededError`,
   * `NetworkNotAllowedError`, `VerificationUnavailableError`. */
  verifyPayment(request: VerifyPaymentRequest): Promise<VerificationResult> {
    return this.#call(OPERATIONS.verifyPayment, { body: request });
  }

  /** Verifies a mined transfer to `recipient` of at least `expected_amount` atomic units (a
   * decimal string) on `chain` (CAIP-2 `eip155:8453` or a v1 name `base`). Each transaction
   * counts once per tenant: a second check answers `invalidReason: "tx_already_used"`. */
  verifyTransaction(request: VerifyTransactionRequest): Promise<VerificationResult> {
    return this.#call(OPERATIONS.verifyTransaction, { body: request });
  }

  // Usage (a key with usage:read), chains, health.

  /** A tenant's usage this UTC month: verified payments, limit, remaining, revenue by route,
   * network and asset, and a daily series. With an API key, its own tenant's; the operator names
   * the `tenant`. */
  getUsage(query: { tenant?: string } = {}): Promise<Usage> {
    return this.#call(OPERATIONS.getUsage, { query });
  }

  /** The plans (tiers) of the gateway's config: limits and networks (operator). */
  listTiers(): Promise<Tier[]> {
    return this.#call(OPERATIONS.listTiers, {});
  }

  /** The networks and assets the gateway accepts; with an API key, `allowed` says which the
   * caller's tier allows. */
  getSupportedChains(): Promise<SupportedChains> {
    return this.#call(OPERATIONS.getSupportedChains, {});
  }

  /** Liveness: `{status: "ok"}` when the process answers. */
  health(): Promise<HealthStatus> {
    return this.#call(OPERATIONS.health, {});
  }

  /** Readiness. A 503 `not_ready` is returned, not thrown: check `status`. */
  ready(): Promise<Readiness> {
    return this.#call(OPERATIONS.ready, {}, { okStatuses: [503], retry: false });
  }

  // Routes (a key with routes:write for its own; the operator for any tenant).

  /** Routes: with an API key, its tenant's (the file's and the API's); for the operator, every
   * tenant's, or `tenant`'s. */
  listRoutes(query: { tenant?: string } = {}): Promise<RouteList> {
    return this.#call(OPERATIONS.listRoutes, { query });
  }

  /** Creates a route from its fields (`{path: "/acme/data/*", upstream: "https://api.acme.test",
   * price: "$0.01"}`; the operator adds `tenant`). It must lie in the tenant's namespace
   * (`setNamespace`). Throws `InvalidRouteError` with each field's error in `fields`. */
  createRoute(spec: RouteSpec): Promise<Route> {
    return this.#call(OPERATIONS.createRoute, { body: spec });
  }

  /** Changes some of a route's fields (`{price: "$0.02"}`). The file's routes (`config:…`) throw
   * `ConfigRouteError`. */
  updateRoute(id: string, spec: RouteSpec): Promise<Route> {
    return this.#call(OPERATIONS.updateRoute, { path: { id }, body: spec });
  }

  /** Deletes a route written through the API. */
  async deleteRoute(id: string): Promise<void> {
    await this.#call(OPERATIONS.deleteRoute, { path: { id } });
  }

  /** Sets where a tenant's routes may live (operator). Throws `NamespaceTakenError` if another
   * tenant holds one of the hosts or the prefix. */
  setNamespace(id: string, namespace: Namespace): Promise<Namespace> {
    return this.#call(OPERATIONS.setNamespace, { path: { id }, body: namespace });
  }

  // Plans and billing (a tenant's key).

  /** The caller's tenant's plan, how it is billed, and the plans on sale. */
  getBilling(): Promise<BillingInfo> {
    return this.#call(OPERATIONS.getBilling, {});
  }

  /** Starts a Stripe Checkout session for the caller's tenant to subscribe to `tier`; send the
   * tenant to its `url`. Throws `BillingDisabledError` without Stripe billing, `NotForSaleError`
   * for a tier not sold through Stripe. */
  checkout(request: { tier: string }): Promise<CheckoutSession> {
    return this.#call(OPERATIONS.checkout, { body: request });
  }

  /** Moves the caller's tenant to `tier`, paid with x402 to the operator. Without
   * `paymentSignature` it throws `PaymentRequiredError`, whose `paymentRequired` is the challenge:
   * pay it with an x402 client and call again with the `PAYMENT-SIGNATURE` it makes. */
  upgradePlan(request: { tier: string }, options: { paymentSignature?: string } = {}): Promise<PlanUpgrade> {
    const headers: Record<string, string> = options.paymentSignature
      ? { "payment-signature": options.paymentSignature }
      : {};
    return this.#call(OPERATIONS.upgradePlan, { body: request, headers });
  }

  // The configuration (operator).

  /** Re-reads the gateway's config file, as SIGHUP does. A refused file (422, `result: "invalid"`
   * with every error in `errors`) or one the database could not take (503, `"failed"`) resolves
   * with the report: nothing changed, and the running config keeps serving. Throws
   * `ReloadUnavailableError` if the gateway was not started from a file. */
  reloadConfig(): Promise<ReloadReport> {
    return this.#call(OPERATIONS.reloadConfig, {}, { okStatuses: [422, 503] });
  }

  /** The OpenAPI document the gateway serves (`/api/v1/openapi.json`). */
  openapi(): Promise<Record<string, unknown>> {
    return this.#send("GET", "/api/v1/openapi.json", {}, undefined, true, []) as Promise<Record<string, unknown>>;
  }

  #auth(auth: Auth): Record<string, string> {
    const admin: Record<string, string> = this.adminToken ? { "x-admin-key": this.adminToken } : {};
    const key: Record<string, string> = this.apiKey ? { authorization: `Bearer ${this.apiKey}` } : {};
    switch (auth) {
      case "admin":
        return admin;
      case "key":
      case "optional_key":
        return key;
      case "admin_or_key":
        return this.adminToken ? admin : key;
      case "none":
        return {};
    }
  }

  #call<P extends keyof paths, M extends Method>(
    op: OperationSpec<P, M>,
    args: CallArgs<Operation<P, M>>,
    extra: { okStatuses?: number[]; retry?: boolean } = {},
  ): Promise<Answer<Operation<P, M>>> {
    let path: string = op.path;
    for (const [name, value] of Object.entries((args.path ?? {}) as Record<string, string>)) {
      if (typeof value !== "string" || value === "") {
        throw new TypeError(`${op.operationId}: ${name} must be a non-empty string`);
      }
      path = path.replace(`{${name}}`, encodeURIComponent(value));
    }
    const query = new URLSearchParams();
    for (const [name, value] of Object.entries((args.query ?? {}) as Record<string, unknown>)) {
      if (value !== undefined && value !== null) query.set(name, String(value));
    }
    const qs = query.toString();
    return this.#send(
      op.method.toUpperCase(),
      qs ? `${path}?${qs}` : path,
      { ...this.#auth(op.auth), ...args.headers },
      args.body,
      extra.retry ?? op.method === "get",
      extra.okStatuses ?? [],
    ) as Promise<Answer<Operation<P, M>>>;
  }

  async #send(
    method: string,
    path: string,
    auth: Record<string, string>,
    body: unknown,
    retry: boolean,
    okStatuses: number[],
  ): Promise<unknown> {
    const url = this.baseUrl + path;
    const headers: Record<string, string> = { ...this.#headers, ...auth };
    if (body !== undefined) headers["content-type"] = "application/json";
    for (let attempt = 0; ; attempt++) {
      let resp: Response;
      try {
        resp = await this.#fetch(url, {
          method,
          headers,
          body: body === undefined ? undefined : JSON.stringify(body),
          signal: AbortSignal.timeout(this.timeoutMs),
        });
      } catch (e) {
        if (e instanceof X402Error) throw e;
        const delay = this.#retryDelay(retry, attempt, null);
        if (delay === null) {
          throw new TransportError(`${method} ${url}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
        }
        await sleep(delay);
        continue;
      }
      const delay = this.#retryDelay(retry, attempt, resp);
      if (delay !== null) {
        await resp.body?.cancel();
        await sleep(delay);
        continue;
      }
      const text = await resp.text();
      let parsed: unknown = text;
      let isJson = false;
      if (text !== "") {
        try {
          parsed = JSON.parse(text);
          isJson = true;
        } catch {
          // Not JSON: kept as text.
        }
      }
      // An error status listed in okStatuses carries the operation's answer (a `not_ready`
      // readiness, a refused reload), unless its body is the API's error shape.
      const answered = okStatuses.includes(resp.status) && isJson && typeof parsed === "object"
        && parsed !== null && !("error" in parsed);
      if (resp.status === 204) return undefined;
      if (resp.ok || answered) {
        if (!isJson) throw new ProtocolError(`${method} ${url}: ${resp.status} with a body that is not JSON`);
        return parsed;
      }
      throw errorFromResponse(resp.status, parsed, resp.headers);
    }
  }

  /** Milliseconds to wait before retrying, or null to stop. */
  #retryDelay(retry: boolean, attempt: number, resp: Response | null): number | null {
    if (!retry || attempt >= this.maxRetries) return null;
    if (resp !== null) {
      const retryAfter = resp.headers.get("retry-after");
      if (resp.status === 429) {
        if (retryAfter === null) return null; // a quota, not a rate limit: waiting does not help
      } else if (!RETRY_STATUSES.has(resp.status)) {
        return null;
      }
      if (retryAfter !== null && Number.isFinite(Number(retryAfter))) {
        return Math.min(Math.max(0, Number(retryAfter) * 1000), this.maxBackoffMs);
      }
    }
    const base = Math.min(this.backoffMs * 2 ** attempt, this.maxBackoffMs);
    return base / 2 + Math.random() * (base / 2);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

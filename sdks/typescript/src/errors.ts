// Errors thrown by the client. Every error answer of the management API is
// `{"error": code, "message": text}` with an HTTP status; each code has its own class, a subclass
// of the class for its status (`ScopeNotHeldError` extends `ForbiddenError` extends `ApiError`
// extends `X402Error`). A code this SDK does not know throws its status class; a status it does
// not know throws `ApiError`.

import type { components } from "./schema.js";

/** Every `error` code of the API, from the OpenAPI document. */
export type ErrorCode = components["schemas"]["ErrorBody"]["error"];

/** Base class of every error this SDK throws. */
export class X402Error extends Error {
  override name = "X402Error";
}

/** The gateway could not be reached, or did not answer in time (after any retries). */
export class TransportError extends X402Error {
  override name = "TransportError";
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** The gateway answered a success with a body that is not JSON. */
export class ProtocolError extends X402Error {
  override name = "ProtocolError";
}

export interface ApiErrorInit {
  status: number;
  code?: string | null;
  requestId?: string | null;
  retryAfter?: number | null;
  body?: unknown;
}

/** An error answer of the management API. */
export class ApiError extends X402Error {
  override name = "ApiError";
  /** The HTTP status. */
  readonly status: number;
  /** The API's stable `error` code, or null when the body was not the API's error shape. */
  readonly code: string | null;
  /** The `X-Request-Id` the gateway answered with, for its logs. */
  readonly requestId: string | null;
  /** Seconds from `Retry-After`, when the answer carried one. */
  readonly retryAfter: number | null;
  /** The decoded JSON body (or its text, if it was not JSON). */
  readonly body: unknown;

  constructor(message: string, init: ApiErrorInit) {
    super(message);
    this.status = init.status;
    this.code = init.code ?? null;
    this.requestId = init.requestId ?? null;
    this.retryAfter = init.retryAfter ?? null;
    this.body = init.body;
  }
}

/** 400 `bad_request`: a malformed body or query, an unknown field, a value out of range. */
export class BadRequestError extends ApiError {
  override name = "BadRequestError";
}
/** The API answers a validation failure with a 400 `bad_request` (`invalid_route` for routes). */
export { BadRequestError as ValidationError };

/** One field's error in a route that does not validate. */
export type RouteFieldError = components["schemas"]["FieldError"];

/** 400 `invalid_route`: a route that does not validate; `fields` has each field's error. */
export class InvalidRouteError extends BadRequestError {
  override name = "InvalidRouteError";
  readonly fields: RouteFieldError[];
  constructor(message: string, init: ApiErrorInit) {
    super(message, init);
    const body = init.body as { fields?: unknown } | null | undefined;
    this.fields = Array.isArray(body?.fields) ? (body.fields as RouteFieldError[]) : [];
  }
}

/** 400 `invalid_signature`: a Stripe webhook whose signature does not verify. */
export class InvalidSignatureError extends BadRequestError {
  override name = "InvalidSignatureError";
}
/** 400 `not_for_sale`: the operator does not sell that tier (this way). */
export class NotForSaleError extends BadRequestError {
  override name = "NotForSaleError";
}

/** 402: an x402-priced call (a plan upgrade) without a payment, or with one that was refused.
 * `paymentRequired` is the decoded `PAYMENT-REQUIRED` challenge: pay one of its `accepts` with
 * an x402 client and call again with the `PAYMENT-SIGNATURE` it makes. */
export class PaymentRequiredError extends ApiError {
  override name = "PaymentRequiredError";
  paymentRequired: { accepts?: unknown[]; error?: string; [k: string]: unknown } | null = null;
  get accepts(): unknown[] {
    return this.paymentRequired?.accepts ?? [];
  }
}

/** 401 `unauthorized`: a missing, unknown, expired or revoked credential. */
export class UnauthorizedError extends ApiError {
  override name = "UnauthorizedError";
}

/** 401 `session_expired`: a dashboard session cookie that is no longer valid. */
export class SessionExpiredError extends UnauthorizedError {
  override name = "SessionExpiredError";
}

/** 403: authenticated, but not allowed. Each reason has its own subclass. */
export class ForbiddenError extends ApiError {
  override name = "ForbiddenError";
}
/** 403 `insufficient_scope`: the API key lacks the operation's scope. */
export class InsufficientScopeError extends ForbiddenError {
  override name = "InsufficientScopeError";
}
/** 403 `scope_not_held`: a key asked to grant (or rotate into) a scope it does not hold. */
export class ScopeNotHeldError extends ForbiddenError {
  override name = "ScopeNotHeldError";
}
/** 403 `admin_disabled`: the gateway has no `admin.token`, so operator calls are off. */
export class AdminDisabledError extends ForbiddenError {
  override name = "AdminDisabledError";
}
/** 403 `tenant_suspended`: the tenant is suspended. */
export class TenantSuspendedError extends ForbiddenError {
  override name = "TenantSuspendedError";
}
/** 403 `network_not_allowed`: the tenant's tier does not allow the network. */
export class NetworkNotAllowedError extends ForbiddenError {
  override name = "NetworkNotAllowedError";
}

/** 403 `config_route`: the config file's routes are read-only through the API. */
export class ConfigRouteError extends ForbiddenError {
  override name = "ConfigRouteError";
}
/** 403 `csrf_failed`: a change made with a dashboard session but without its CSRF token. */
export class CsrfFailedError extends ForbiddenError {
  override name = "CsrfFailedError";
}
/** 403 `operator_only`: a tenant's dashboard session asked for an operator endpoint. */
export class OperatorOnlyError extends ForbiddenError {
  override name = "OperatorOnlyError";
}
/** 403 `tenant_only`: the operator's dashboard session asked for a tenant endpoint. */
export class TenantOnlyError extends ForbiddenError {
  override name = "TenantOnlyError";
}

/** 404 `not_found`: no such tenant, key or endpoint (or not the caller's). */
export class NotFoundError extends ApiError {
  override name = "NotFoundError";
}

/** 404 `billing_disabled`: the gateway does not sell plans this way (no `[billing]`). */
export class BillingDisabledError extends NotFoundError {
  override name = "BillingDisabledError";
}

/** 405 `method_not_allowed`. */
export class MethodNotAllowedError extends ApiError {
  override name = "MethodNotAllowedError";
}

/** 409: the request conflicts with the current state. */
export class ConflictError extends ApiError {
  override name = "ConflictError";
}
/** 409 `tenant_exists`: a tenant with that id already exists. */
export class TenantExistsError extends ConflictError {
  override name = "TenantExistsError";
}
/** 409 `key_not_live`: a revoked or expired key cannot be rotated. */
export class KeyNotLiveError extends ConflictError {
  override name = "KeyNotLiveError";
}

/** 409 `reload_unavailable`: the gateway was not started from a config file. */
export class ReloadUnavailableError extends ConflictError {
  override name = "ReloadUnavailableError";
}

/** 409 `route_limit_reached`: the tenant has `[routes_api] max_routes_per_tenant` routes. */
export class RouteLimitReachedError extends ConflictError {
  override name = "RouteLimitReachedError";
}
/** 409 `namespace_taken`: another tenant holds one of the hosts or the path prefix. */
export class NamespaceTakenError extends ConflictError {
  override name = "NamespaceTakenError";
}

/** 429: a quota or a rate limit. */
export class TooManyRequestsError extends ApiError {
  override name = "TooManyRequestsError";
}
/** 429 `tenant_quota_exceeded`: this month's verified payments are used up. */
export class QuotaExceededError extends TooManyRequestsError {
  override name = "QuotaExceededError";
}
/** 429 `rate_limited`: over a `[rate_limit]` limit; see `retryAfter`. */
export class RateLimitedError extends TooManyRequestsError {
  override name = "RateLimitedError";
}

/** 500: the gateway failed at its own work. */
export class InternalServerError extends ApiError {
  override name = "InternalServerError";
}
/** 500 `internal`. */
export class InternalError extends InternalServerError {
  override name = "InternalError";
}
/** 500 `plan_not_applied`: a plan was paid and settled but the tier could not be written. */
export class PlanNotAppliedError extends InternalServerError {
  override name = "PlanNotAppliedError";
}

/** 502: a service the gateway calls failed. */
export class BadGatewayError extends ApiError {
  override name = "BadGatewayError";
}
/** 502 `stripe_unavailable`: Stripe did not create the Checkout session. */
export class StripeUnavailableError extends BadGatewayError {
  override name = "StripeUnavailableError";
}

/** 503: the gateway cannot answer now; retry shortly. */
export class ServiceUnavailableError extends ApiError {
  override name = "ServiceUnavailableError";
}
/** 503 `unavailable`: the gateway's database does not answer. */
export class UnavailableError extends ServiceUnavailableError {
  override name = "UnavailableError";
}
/** 503 `verification_unavailable`: the chain does not answer. */
export class VerificationUnavailableError extends ServiceUnavailableError {
  override name = "VerificationUnavailableError";
}

/** 503 `payment_unavailable`: the chain or the database cannot take a payment now. */
export class PaymentUnavailableError extends ServiceUnavailableError {
  override name = "PaymentUnavailableError";
}
/** 503 `settlement_pending`: the payment's settlement is not confirmed yet; retry. */
export class SettlementPendingError extends ServiceUnavailableError {
  override name = "SettlementPendingError";
}

/** 503 `dashboard_not_built`: the gateway was built without its dashboard. */
export class DashboardNotBuiltError extends ServiceUnavailableError {
  override name = "DashboardNotBuiltError";
}

type ApiErrorClass = new (message: string, init: ApiErrorInit) => ApiError;

/**
 * Each code's class and status. Typed over `ErrorCode` (generated from the document), so a code
 * added to the API without a class here fails the build.
 */
export const ERROR_CLASSES: { readonly [C in ErrorCode]: readonly [number, ApiErrorClass] } = {
  bad_request: [400, BadRequestError],
  unauthorized: [401, UnauthorizedError],
  insufficient_scope: [403, InsufficientScopeError],
  scope_not_held: [403, ScopeNotHeldError],
  admin_disabled: [403, AdminDisabledError],
  tenant_suspended: [403, TenantSuspendedError],
  network_not_allowed: [403, NetworkNotAllowedError],
  not_found: [404, NotFoundError],
  method_not_allowed: [405, MethodNotAllowedError],
  tenant_exists: [409, TenantExistsError],
  key_not_live: [409, KeyNotLiveError],
  reload_unavailable: [409, ReloadUnavailableError],
  tenant_quota_exceeded: [429, QuotaExceededError],
  rate_limited: [429, RateLimitedError],
  unavailable: [503, UnavailableError],
  verification_unavailable: [503, VerificationUnavailableError],
  route_limit_reached: [409, RouteLimitReachedError],
  namespace_taken: [409, NamespaceTakenError],
  config_route: [403, ConfigRouteError],
  invalid_route: [400, InvalidRouteError],
  session_expired: [401, SessionExpiredError],
  csrf_failed: [403, CsrfFailedError],
  operator_only: [403, OperatorOnlyError],
  tenant_only: [403, TenantOnlyError],
  dashboard_not_built: [503, DashboardNotBuiltError],
  billing_disabled: [404, BillingDisabledError],
  invalid_signature: [400, InvalidSignatureError],
  not_for_sale: [400, NotForSaleError],
  stripe_unavailable: [502, StripeUnavailableError],
  payment_unavailable: [503, PaymentUnavailableError],
  settlement_pending: [503, SettlementPendingError],
  internal: [500, InternalError],
  plan_not_applied: [500, PlanNotAppliedError],
};

/** The class of each status, for codes this SDK does not know. */
export const STATUS_CLASSES: { readonly [status: number]: ApiErrorClass } = {
  400: BadRequestError,
  401: UnauthorizedError,
  402: PaymentRequiredError,
  403: ForbiddenError,
  404: NotFoundError,
  405: MethodNotAllowedError,
  409: ConflictError,
  429: TooManyRequestsError,
  500: InternalServerError,
  502: BadGatewayError,
  503: ServiceUnavailableError,
};

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** The error for an error answer: by its `error` code, else by its status. */
export function errorFromResponse(
  status: number,
  body: unknown,
  headers: { get(name: string): string | null },
): ApiError {
  const code = isObject(body) && typeof body.error === "string" ? body.error : null;
  let message = isObject(body) && typeof body.message === "string" ? body.message : null;
  if (message === null) message = typeof body === "string" && body ? body : `HTTP ${status}`;
  const known = code !== null && Object.hasOwn(ERROR_CLASSES, code)
    ? ERROR_CLASSES[code as ErrorCode]
    : null;
  const cls = known && known[0] === status ? known[1] : (STATUS_CLASSES[status] ?? ApiError);
  const retry = headers.get("retry-after");
  const retryAfter = retry !== null && retry.trim() !== "" && Number.isFinite(Number(retry))
    ? Math.max(0, Number(retry))
    : null;
  const error = new cls(message, {
    status,
    code,
    requestId: headers.get("x-request-id"),
    retryAfter,
    body,
  });
  if (error instanceof PaymentRequiredError) {
    error.paymentRequired = challenge(headers.get("payment-required"), body);
    if (message === `HTTP ${status}` && typeof error.paymentRequired?.error === "string") {
      error.message = error.paymentRequired.error;
    }
  }
  return error;
}

/** The x402 challenge of a 402: the v2 `PAYMENT-REQUIRED` header (base64 JSON), else a v1 body. */
function challenge(header: string | null, body: unknown): PaymentRequiredError["paymentRequired"] {
  if (header) {
    try {
      const decoded: unknown = JSON.parse(new TextDecoder().decode(Uint8Array.from(atob(header), (c) => c.charCodeAt(0))));
      if (isObject(decoded)) return decoded;
    } catch {
      // Not a challenge: fall through.
    }
  }
  return isObject(body) && "accepts" in body ? body : null;
}

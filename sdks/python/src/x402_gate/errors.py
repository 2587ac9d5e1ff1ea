"""Exceptions raised by the clients.

Every error answer of the management API is ``{"error": code, "message": text}`` with an HTTP
status. Each ``code`` has its own exception class, a subclass of the class for its status
(``ScopeNotHeldError`` is a ``ForbiddenError`` is an ``ApiError`` is an ``X402Error``), so
callers can catch as broadly or as narrowly as they like::

    try:
        client.verify_transaction(...)
    except QuotaExceededError:
        ...  # this month's verified payments are used up
    except ForbiddenError as e:
        print(e.status, e.code, e.message)

A code this SDK does not know yet raises its status class; a status it does not know raises
``ApiError``.
"""

from __future__ import annotations

import base64
import json

from typing import Any, Dict, List, Mapping, Optional, Tuple, Type

from .models import RouteFieldError

__all__ = [
    "X402Error",
    "TransportError",
    "ProtocolError",
    "ApiError",
    "BadRequestError",
    "ValidationError",
    "UnauthorizedError",
    "ForbiddenError",
    "InsufficientScopeError",
    "ScopeNotHeldError",
    "AdminDisabledError",
    "TenantSuspendedError",
    "NetworkNotAllowedError",
    "NotFoundError",
    "MethodNotAllowedError",
    "ConflictError",
    "TenantExistsError",
    "KeyNotLiveError",
    "ReloadUnavailableError",
    "TooManyRequestsError",
    "QuotaExceededError",
    "RateLimitedError",
    "ServiceUnavailableError",
    "UnavailableError",
    "VerificationUnavailableError",
    "InvalidRouteError",
    "SessionExpiredError",
    "CsrfFailedError",
    "OperatorOnlyError",
    "TenantOnlyError",
    "ConfigRouteError",
    "RouteLimitReachedError",
    "NamespaceTakenError",
    "DashboardNotBuiltError",
    "PaymentRequiredError",
    "BillingDisabledError",
    "InvalidSignatureError",
    "NotForSaleError",
    "InternalServerError",
    "InternalError",
    "PlanNotAppliedError",
    "BadGatewayError",
    "StripeUnavailableError",
    "PaymentUnavailableError",
    "SettlementPendingError",
    "ERROR_CLASSES",
    "ERROR_BODIES",
    "STATUS_CLASSES",
    "error_from_response",
]


class X402Error(Exception):
    """Base class of every exception this SDK raises."""


class TransportError(X402Error):
    """The gateway could not be reached, or did not answer in time (after any retries)."""


class ProtocolError(X402Error):
    """The gateway answered with a body this SDK cannot read as the documented model."""


class ApiError(X402Error):
    """An error answer of the management API.

    Attributes:
        status: the HTTP status (``403``).
        code: the API's stable ``error`` code (``"scope_not_held"``), or ``None`` when the body
            was not the API's error shape (a proxy in between, say).
        message: the API's human-readable ``message``.
        request_id: the ``X-Request-Id`` the gateway answered with, for its logs.
        retry_after: seconds from ``Retry-After``, when the answer carried one.
        body: the decoded JSON body (or the text, if it was not JSON).
    """

    status: int = 0
    code: Optional[str] = None

    def __init__(
        self,
        message: str,
        *,
        status: Optional[int] = None,
        code: Optional[str] = None,
        request_id: Optional[str] = None,
        retry_after: Optional[float] = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.message = message
        self.request_id = request_id
        self.retry_after = retry_after
        self.body = body

    def __str__(self) -> str:
        code = f" {self.code}" if self.code else ""
        return f"{self.status}{code}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, code={self.code!r}, message={self.message!r})"


class BadRequestError(ApiError):
    """400 ``bad_request``: a malformed body or query, an unknown field, a value out of range."""

    status = 400
    code = "bad_request"


#: The API answers a validation failure with a 400 ``bad_request`` (``invalid_route`` for routes).
ValidationError = BadRequestError


class InvalidRouteError(BadRequestError):
    """400 ``invalid_route``: a route that does not validate; ``fields`` has each field's error."""

    code = "invalid_route"

    def __init__(self, message: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        raw = self.body.get("fields") if isinstance(self.body, dict) else None
        self.fields: List[RouteFieldError] = [
            RouteFieldError.from_json(f) for f in raw or [] if isinstance(f, dict)
        ]


class InvalidSignatureError(BadRequestError):
    """400 ``invalid_signature``: a Stripe webhook whose signature does not verify."""

    code = "invalid_signature"


class NotForSaleError(BadRequestError):
    """400 ``not_for_sale``: the operator does not sell that tier (this way)."""

    code = "not_for_sale"


class PaymentRequiredError(ApiError):
    """402: an x402-priced call (a plan upgrade) without a payment, or with one that was refused.

    ``payment_required`` is the decoded ``PAYMENT-REQUIRED`` challenge (``accepts`` lists what
    may be paid); sign one with an x402 client and call again with its ``PAYMENT-SIGNATURE``.
    """

    status = 402

    def __init__(self, message: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.payment_required: Optional[Dict[str, Any]] = None

    @property
    def accepts(self) -> List[Dict[str, Any]]:
        return list((self.payment_required or {}).get("accepts") or [])


class UnauthorizedError(ApiError):
    """401 ``unauthorized``: a missing, unknown, expired or revoked credential."""

    status = 401
    code = "unauthorized"


class SessionExpiredError(UnauthorizedError):
    """401 ``session_expired``: a dashboard session cookie that is no longer valid."""

    code = "session_expired"


class ForbiddenError(ApiError):
    """403: authenticated, but not allowed. Each reason has its own subclass."""

    status = 403


class InsufficientScopeError(ForbiddenError):
    """403 ``insufficient_scope``: the API key lacks the operation's scope."""

    code = "insufficient_scope"


class ScopeNotHeldError(ForbiddenError):
    """403 ``scope_not_held``: a key asked to grant (or rotate into) a scope it does not hold."""

    code = "scope_not_held"


class AdminDisabledError(ForbiddenError):
    """403 ``admin_disabled``: the gateway has no ``admin.token``, so operator calls are off."""

    code = "admin_disabled"


class TenantSuspendedError(ForbiddenError):
    """403 ``tenant_suspended``: the tenant is suspended."""

    code = "tenant_suspended"


class NetworkNotAllowedError(ForbiddenError):
    """403 ``network_not_allowed``: the tenant's tier does not allow the network."""

    code = "network_not_allowed"


class ConfigRouteError(ForbiddenError):
    """403 ``config_route``: the config file's routes are read-only through the API."""

    code = "config_route"


class CsrfFailedError(ForbiddenError):
    """403 ``csrf_failed``: a change made with a dashboard session but without its CSRF token."""

    code = "csrf_failed"


class OperatorOnlyError(ForbiddenError):
    """403 ``operator_only``: a dashboard session of a tenant asked for an operator endpoint."""

    code = "operator_only"


class TenantOnlyError(ForbiddenError):
    """403 ``tenant_only``: a dashboard session of the operator asked for a tenant endpoint."""

    code = "tenant_only"


class NotFoundError(ApiError):
    """404 ``not_found``: no such tenant, key or endpoint (or not the caller's)."""

    status = 404
    code = "not_found"


class BillingDisabledError(NotFoundError):
    """404 ``billing_disabled``: the gateway does not sell plans this way (no ``[billing]``)."""

    code = "billing_disabled"


class MethodNotAllowedError(ApiError):
    """405 ``method_not_allowed``."""

    status = 405
    code = "method_not_allowed"


class ConflictError(ApiError):
    """409: the request conflicts with the current state."""

    status = 409


class TenantExistsError(ConflictError):
    """409 ``tenant_exists``: a tenant with that id already exists."""

    code = "tenant_exists"


class KeyNotLiveError(ConflictError):
    """409 ``key_not_live``: a revoked or expired key cannot be rotated."""

    code = "key_not_live"


class ReloadUnavailableError(ConflictError):
    """409 ``reload_unavailable``: the gateway was not started from a config file."""

    code = "reload_unavailable"


class RouteLimitReachedError(ConflictError):
    """409 ``route_limit_reached``: the tenant has ``[routes_api] max_routes_per_tenant`` routes."""

    code = "route_limit_reached"


class NamespaceTakenError(ConflictError):
    """409 ``namespace_taken``: another tenant holds one of the hosts or the path prefix."""

    code = "namespace_taken"


class TooManyRequestsError(ApiError):
    """429: a quota or a rate limit."""

    status = 429


class QuotaExceededError(TooManyRequestsError):
    """429 ``tenant_quota_exceeded``: this month's verified payments are used up."""

    code = "tenant_quota_exceeded"


class RateLimitedError(TooManyRequestsError):
    """429 ``rate_limited``: over a ``[rate_limit]`` limit; see ``retry_after``."""

    code = "rate_limited"


class InternalServerError(ApiError):
    """500: the gateway failed at its own work."""

    status = 500


class InternalError(InternalServerError):
    """500 ``internal``."""

    code = "internal"


class PlanNotAppliedError(InternalServerError):
    """500 ``plan_not_applied``: a plan was paid and settled but the tier could not be written
    (the operator sees it in the ledger and logs)."""

    code = "plan_not_applied"


class BadGatewayError(ApiError):
    """502: a service the gateway calls failed."""

    status = 502


class StripeUnavailableError(BadGatewayError):
    """502 ``stripe_unavailable``: Stripe did not create the Checkout session."""

    code = "stripe_unavailable"


class ServiceUnavailableError(ApiError):
    """503: the gateway cannot answer now; retry shortly."""

    status = 503


class UnavailableError(ServiceUnavailableError):
    """503 ``unavailable``: the gateway's database does not answer."""

    code = "unavailable"


class VerificationUnavailableError(ServiceUnavailableError):
    """503 ``verification_unavailable``: the chain does not answer."""

    code = "verification_unavailable"


class PaymentUnavailableError(ServiceUnavailableError):
    """503 ``payment_unavailable``: the chain or the database cannot take a payment now."""

    code = "payment_unavailable"


class SettlementPendingError(ServiceUnavailableError):
    """503 ``settlement_pending``: the payment's settlement is not confirmed yet; retry."""

    code = "settlement_pending"


class DashboardNotBuiltError(ServiceUnavailableError):
    """503 ``dashboard_not_built``: the gateway was built without its dashboard."""

    code = "dashboard_not_built"


def _leaves() -> Dict[str, Type[ApiError]]:
    out: Dict[str, Type[ApiError]] = {}
    stack = [ApiError]
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        code = cls.__dict__.get("code")
        if code:
            out[code] = cls
    return out


#: The exception class of each ``error`` code.
ERROR_CLASSES: Dict[str, Type[ApiError]] = _leaves()

#: Error answers with more than ``error`` and ``message``, by their OpenAPI schema: the
#: exception class, and each further field with the attribute's type.
ERROR_BODIES: Dict[str, Tuple[Type[ApiError], Dict[str, Any]]] = {
    "InvalidRoute": (InvalidRouteError, {"fields": List[RouteFieldError]}),
}

#: The exception class of each status, for codes this SDK does not know.
STATUS_CLASSES: Dict[int, Type[ApiError]] = {
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
}


def _retry_after(headers: Mapping[str, str]) -> Optional[float]:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def error_from_response(
    status: int, body: Any, headers: Mapping[str, str]
) -> ApiError:
    """The exception for an error answer: by its ``error`` code, else by its status."""
    code = body.get("error") if isinstance(body, dict) else None
    message = body.get("message") if isinstance(body, dict) else None
    if not isinstance(message, str):
        message = body if isinstance(body, str) and body else f"HTTP {status}"
    cls = ERROR_CLASSES.get(code) if isinstance(code, str) else None
    if cls is None or cls.status != status:
        cls = STATUS_CLASSES.get(status, ApiError)
    error = cls(
        message,
        status=status,
        code=code if isinstance(code, str) else None,
        request_id=headers.get("x-request-id"),
        retry_after=_retry_after(headers),
        body=body,
    )
    if isinstance(error, PaymentRequiredError):
        error.payment_required = _challenge(headers.get("payment-required"), body)
        if message == f"HTTP {status}" and error.payment_required:
            error.message = str(error.payment_required.get("error") or "payment required")
            error.args = (error.message,)
    return error


def _challenge(header: Optional[str], body: Any) -> Optional[Dict[str, Any]]:
    """The x402 challenge of a 402: the v2 ``PAYMENT-REQUIRED`` header, else a v1 body."""
    if header:
        try:
            decoded = json.loads(base64.b64decode(header))
            if isinstance(decoded, dict):
                return decoded
        except (ValueError, TypeError):
            pass
    return body if isinstance(body, dict) and "accepts" in body else None

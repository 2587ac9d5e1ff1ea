"""The management API's operations: method, path, who may call, and whether a retry is safe.

One row per ``operationId`` of the OpenAPI document; the client methods are bound to these rows
with :func:`operation`, and the SDK's tests check the table and the bindings against the
document the gateway serves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple, TypeVar

F = TypeVar("F", bound=Callable)

#: Who authenticates an operation.
ADMIN = "admin"  # the operator's admin token (X-Admin-Key)
KEY = "key"  # a tenant's API key (Authorization: Bearer)
ADMIN_OR_KEY = "admin_or_key"  # the admin token if the client has one, else the API key
OPTIONAL_KEY = "optional_key"  # the API key if the client has one, else nothing
NONE = "none"


@dataclass(frozen=True)
class Operation:
    operation_id: str
    method: str
    #: With ``{name}`` placeholders, filled from the method's positional arguments in order.
    path: str
    auth: str
    #: GETs are retried on a transport error, a 502/503/504 or a 429 ``rate_limited``.
    retry: bool = False
    #: The OpenAPI schema of the request body, when the method sends one.
    body: Optional[str] = None
    #: Error statuses whose body is the operation's answer, returned rather than raised (unless
    #: the body is the API's error shape): /ready's 503, a reload's 422 and 503.
    answers: Tuple[int, ...] = ()


def _op(op_id: str, method: str, path: str, auth: str, body: Optional[str] = None) -> Operation:
    return Operation(op_id, method, path, auth, retry=(method == "GET"), body=body)


OPERATIONS: Dict[str, Operation] = {
    o.operation_id: o
    for o in [
        _op("create_tenant", "POST", "/api/v1/x402/admin/create-tenant", ADMIN, "CreateTenantRequest"),
        _op("list_tenants", "GET", "/api/v1/x402/admin/tenants", ADMIN),
        _op("get_tenant", "GET", "/api/v1/x402/admin/tenants/{tenant_id}", ADMIN),
        _op("update_tenant", "PATCH", "/api/v1/x402/admin/tenants/{tenant_id}", ADMIN, "UpdateTenantRequest"),
        _op("suspend_tenant", "POST", "/api/v1/x402/admin/tenants/{tenant_id}/suspend", ADMIN),
        _op("activate_tenant", "POST", "/api/v1/x402/admin/tenants/{tenant_id}/activate", ADMIN),
        _op("admin_create_key", "POST", "/api/v1/x402/admin/tenants/{tenant_id}/keys", ADMIN, "CreateKeyRequest"),
        _op("admin_list_keys", "GET", "/api/v1/x402/admin/tenants/{tenant_id}/keys", ADMIN),
        _op("admin_rotate_key", "POST", "/api/v1/x402/admin/keys/{key_id}/rotate", ADMIN, "RotateKeyRequest"),
        _op("admin_revoke_key", "POST", "/api/v1/x402/admin/keys/{key_id}/revoke", ADMIN),
        _op("list_payments", "GET", "/api/v1/x402/admin/payments", ADMIN_OR_KEY),
        _op("own_create_key", "POST", "/api/v1/x402/keys", KEY, "CreateKeyRequest"),
        _op("own_list_keys", "GET", "/api/v1/x402/keys", KEY),
        _op("own_rotate_key", "POST", "/api/v1/x402/keys/{key_id}/rotate", KEY, "RotateKeyRequest"),
        _op("own_revoke_key", "POST", "/api/v1/x402/keys/{key_id}/revoke", KEY),
        _op("verify", "POST", "/api/v1/x402/verify", KEY, "VerifyRequest"),
        _op("usage", "GET", "/api/v1/x402/usage", ADMIN_OR_KEY),
        _op("list_tiers", "GET", "/api/v1/x402/admin/tiers", ADMIN),
        _op("supported_chains", "GET", "/api/v1/x402/supported-chains", OPTIONAL_KEY),
        _op("health", "GET", "/health", NONE),
        # A 503 from /ready is an answer (not_ready), not a failure to retry.
        Operation("ready", "GET", "/ready", NONE, retry=False, answers=(503,)),
        Operation("reload_config", "POST", "/api/v1/x402/admin/reload", ADMIN, answers=(422, 503)),
        _op("list_routes", "GET", "/api/v1/x402/routes", ADMIN_OR_KEY),
        # The route's fields travel as one JSON object, passed as the method's `spec`.
        _op("create_route", "POST", "/api/v1/x402/routes", ADMIN_OR_KEY, "object"),
        _op("update_route", "PATCH", "/api/v1/x402/routes/{route_id}", ADMIN_OR_KEY, "object"),
        _op("delete_route", "DELETE", "/api/v1/x402/routes/{route_id}", ADMIN_OR_KEY),
        _op("billing", "GET", "/api/v1/x402/billing", KEY),
        _op("checkout", "POST", "/api/v1/x402/billing/checkout", KEY, "PlanRequest"),
        # Paid with x402: a 402 (PaymentRequiredError) carries the challenge to pay.
        _op("upgrade", "POST", "/api/v1/x402/billing/upgrade", KEY, "PlanRequest"),
        _op("set_namespace", "PUT", "/api/v1/x402/admin/tenants/{tenant_id}/namespace", ADMIN, "NamespaceBody"),
    ]
}


#: Operations of the document that are not client calls, and why.
EXCLUDED: Dict[str, str] = {
    "stripe_webhook": "Stripe calls it, with events signed by the webhook secret",
}


def operation(op_id: str, body: Optional[str] = None) -> Callable[[F], F]:
    """Binds a client method to the operation ``op_id``; ``body`` names the request schema
    it sends when the operation takes one of several (``verify``)."""
    op = OPERATIONS[op_id]

    def bind(fn: F) -> F:
        fn.__x402_operation__ = op  # type: ignore[attr-defined]
        fn.__x402_body__ = body or op.body  # type: ignore[attr-defined]
        return fn

    return bind

"""The clients: :class:`X402Client` (blocking) and :class:`AsyncX402Client` (asyncio), over httpx.

Both have the same methods, one per operation of the management API, plus a few conveniences
(:meth:`X402Client.iter_payments`, :meth:`X402Client.openapi`). A client holds an operator's
``admin_token``, a tenant's ``api_key``, or both; each method sends the credential its operation
needs (see the README for which is which).

Only GET requests are retried (on a connection error, a timeout, a 502/503/504, or a 429 that
says when to come back), with exponential backoff and jitter: a POST or a PATCH is sent once, so
a verification, a new key or a rotation never happens twice behind the caller's back.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import typing
from typing import Any, AsyncIterator, Dict, Iterator, List, Mapping, Optional, Tuple
from urllib.parse import quote

import httpx

from ._version import __version__
from ._operations import ADMIN, ADMIN_OR_KEY, KEY, OPTIONAL_KEY, Operation, operation
from .errors import ApiError, ProtocolError, TransportError, error_from_response
from .models import (
    ApiKey,
    BillingInfo,
    CheckoutSession,
    CreatedTenant,
    HealthStatus,
    Namespace,
    NewKey,
    Payment,
    PaymentsPage,
    PlanUpgrade,
    Readiness,
    ReloadReport,
    RotatedKey,
    Route,
    RouteList,
    SupportedChains,
    Tenant,
    Tier,
    Usage,
    VerificationResult,
    parse,
)

__all__ = ["X402Client", "AsyncX402Client", "DEFAULT_BASE_URL"]

#: The management listener of the README's local setup (`server.admin_listen`).
DEFAULT_BASE_URL = "http://127.0.0.1:8403"

_RETRY_STATUSES = frozenset({502, 503, 504})
_RETURNS: Dict[Any, Any] = {}


def _drop_none(**fields: Any) -> Dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


class _Base:
    """Configuration, requests and answers, shared by both clients."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        api_key: Optional[str] = None,
        admin_token: Optional[str] = None,
        timeout: float = 30.0,
        max_retries: int = 2,
        backoff: float = 0.25,
        max_backoff: float = 8.0,
        headers: Optional[Mapping[str, str]] = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.admin_token = admin_token
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._headers = {
            "accept": "application/json",
            "user-agent": f"x402-gate-python/{__version__}",
            **(headers or {}),
        }

    def __repr__(self) -> str:
        creds = [n for n, v in (("admin_token", self.admin_token), ("api_key", self.api_key)) if v]
        return f"{type(self).__name__}({self.base_url!r}, credentials={creds})"

    def _auth(self, op: Operation) -> Dict[str, str]:
        admin = {"x-admin-key": self.admin_token} if self.admin_token else {}
        key = {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        if op.auth == ADMIN:
            return admin
        if op.auth in (KEY, OPTIONAL_KEY):
            return key
        if op.auth == ADMIN_OR_KEY:
            return admin or key
        return {}

    def _request(
        self,
        op: Operation,
        path_args: Tuple[str, ...] = (),
        query: Optional[Dict[str, Any]] = None,
        body: Optional[Dict[str, Any]] = None,
        headers: Optional[Dict[str, str]] = None,
    ) -> Dict[str, Any]:
        names = [p.split("}")[0] for p in op.path.split("{")[1:]]
        if len(names) != len(path_args):
            raise TypeError(f"{op.operation_id}: expected {len(names)} path arguments")
        path = op.path
        for name, value in zip(names, path_args):
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty string")
            path = path.replace("{" + name + "}", quote(value, safe=""))
        sent = {**self._headers, **self._auth(op), **(headers or {})}
        req: Dict[str, Any] = {"method": op.method, "url": self.base_url + path, "headers": sent}
        if query:
            req["params"] = {k: v for k, v in query.items() if v is not None}
        if body is not None:
            req["json"] = body
        return req

    def _retry_delay(self, op: Operation, attempt: int, resp: Optional[httpx.Response]) -> Optional[float]:
        """Seconds to wait before retrying, or None to stop."""
        if not op.retry or attempt >= self.max_retries:
            return None
        if resp is not None:
            retry_after = resp.headers.get("retry-after")
            if resp.status_code == 429:
                if retry_after is None:
                    return None  # a quota, not a rate limit: waiting does not help
            elif resp.status_code not in _RETRY_STATUSES:
                return None
            if retry_after is not None:
                try:
                    return min(max(0.0, float(retry_after)), self.max_backoff)
                except ValueError:
                    pass
        base = min(self.backoff * (2**attempt), self.max_backoff)
        return base / 2 + random.uniform(0, base / 2)

    def _answer(self, op: Operation, resp: httpx.Response, returns: Any) -> Any:
        try:
            body: Any = resp.json() if resp.content else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = resp.text
        ok = 200 <= resp.status_code < 300 or (
            resp.status_code in op.answers and isinstance(body, dict) and "error" not in body
        )
        if not ok:
            raise error_from_response(resp.status_code, body, resp.headers)
        if returns is None:
            return body
        try:
            return parse(returns, body)
        except TypeError as e:
            raise ProtocolError(f"{op.operation_id}: unexpected answer: {e}") from None

    @staticmethod
    def _returns(method: Any) -> Any:
        """A method's declared return type: what its answer is parsed as."""
        fn = getattr(method, "__func__", method)
        hint = _RETURNS.get(fn)
        if hint is None:
            hint = _RETURNS[fn] = typing.get_type_hints(fn)["return"]
        return hint


class X402Client(_Base):
    """A blocking client of the x402-gate management API.

    Args:
        base_url: the management listener (``server.admin_listen``), e.g.
            ``"http://127.0.0.1:8403"``.
        api_key: a tenant's API key (``x402_live_…``), for the tenant's own keys, usage,
            payments and the verify API.
        admin_token: the operator's ``admin.token``, for tenants and any tenant's keys and
            payments.
        timeout: seconds for each request (connect, read, write).
        max_retries: how many times a GET is retried after a transient failure.
        backoff: the first retry's delay in seconds; it doubles each retry (with jitter), up to
            ``max_backoff``.
        headers: extra headers sent with every request.
        transport: an ``httpx`` transport (``httpx.MockTransport`` in tests).

    Use it as a context manager, or call :meth:`close`::

        with X402Client("http://127.0.0.1:8403", api_key="x402_live_…") as client:
            print(client.get_usage().remaining)
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        api_key: Optional[str] = None,
        admin_token: Optional[str] = None,
        timeout: float = 30.0,
        max_retries: int = 2,
        backoff: float = 0.25,
        max_backoff: float = 8.0,
        headers: Optional[Mapping[str, str]] = None,
        transport: Optional[httpx.BaseTransport] = None,
    ) -> None:
        super().__init__(
            base_url,
            api_key=api_key,
            admin_token=admin_token,
            timeout=timeout,
            max_retries=max_retries,
            backoff=backoff,
            max_backoff=max_backoff,
            headers=headers,
        )
        self._http = httpx.Client(timeout=timeout, transport=transport)

    def close(self) -> None:
        """Closes the connections."""
        self._http.close()

    def __enter__(self) -> "X402Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _send(self, method: Any, *path_args: str, query=None, body=None, headers=None) -> Any:
        returns = self._returns(method)
        return self._send_op(method.__x402_operation__, returns, *path_args, query=query, body=body, headers=headers)

    def _send_op(self, op: Operation, returns: Any, *path_args: str, query=None, body=None, headers=None) -> Any:
        req = self._request(op, path_args, query, body, headers)
        attempt = 0
        while True:
            try:
                resp = self._http.request(**req)
            except httpx.TransportError as e:
                delay = self._retry_delay(op, attempt, None)
                if delay is None:
                    raise TransportError(f"{op.method} {req['url']}: {e!r}") from e
            else:
                delay = self._retry_delay(op, attempt, resp)
                if delay is None:
                    return self._answer(op, resp, returns)
            time.sleep(delay)
            attempt += 1

    # Tenants (operator).

    @operation("create_tenant")
    def create_tenant(
        self,
        email: str,
        tier: str,
        *,
        name: Optional[str] = None,
        id: Optional[str] = None,
        pay_to: Optional[Dict[str, str]] = None,
    ) -> CreatedTenant:
        """Creates a tenant and its first API key (holding every scope; its secret is in
        ``.api_key.key``, shown this once).

        Args:
            email: the tenant's contact address.
            tier: ``free``, ``starter``, ``pro``, ``enterprise`` or a tier of the config.
            name: defaults to the email.
            id: defaults to one derived from the name.
            pay_to: CAIP-2 network -> payout address, e.g. ``{"eip155:8453": "0x…"}``.

        Raises:
            BadRequestError: a bad email, an unknown tier, a bad address or id.
            TenantExistsError: the id is taken.
        """
        body = _drop_none(email=email, tier=tier, name=name, id=id, pay_to=pay_to)
        return self._send(self.create_tenant, body=body)

    @operation("list_tenants")
    def list_tenants(self) -> List[Tenant]:
        """Every tenant, from the config and the API."""
        return self._send(self.list_tenants)

    @operation("get_tenant")
    def get_tenant(self, tenant_id: str) -> Tenant:
        """One tenant. Raises :class:`NotFoundError` if there is none with that id."""
        return self._send(self.get_tenant, tenant_id)

    @operation("update_tenant")
    def update_tenant(
        self,
        tenant_id: str,
        *,
        name: Optional[str] = None,
        tier: Optional[str] = None,
        pay_to: Optional[Dict[str, str]] = None,
    ) -> Tenant:
        """Changes a tenant's name, tier or payout addresses (``pay_to`` replaces them all).
        Challenges and quotas follow at once."""
        body = _drop_none(name=name, tier=tier, pay_to=pay_to)
        return self._send(self.update_tenant, tenant_id, body=body)

    @operation("suspend_tenant")
    def suspend_tenant(self, tenant_id: str) -> Tenant:
        """Suspends a tenant: its priced routes answer 403 ``tenant_suspended``."""
        return self._send(self.suspend_tenant, tenant_id)

    @operation("activate_tenant")
    def activate_tenant(self, tenant_id: str) -> Tenant:
        """Lifts a suspension."""
        return self._send(self.activate_tenant, tenant_id)

    @operation("list_tiers")
    def list_tiers(self) -> List[Tier]:
        """The plans (tiers) of the gateway's config: limits and networks."""
        return self._send(self.list_tiers)

    # Any tenant's keys (operator).

    @operation("admin_create_key")
    def create_tenant_key(
        self,
        tenant_id: str,
        *,
        scopes: Optional[List[str]] = None,
        expires_in_seconds: Optional[int] = None,
    ) -> NewKey:
        """Mints a key for a tenant (by default with every scope; never expires unless
        ``expires_in_seconds`` is given). The secret is in ``.key``, shown this once."""
        body = _drop_none(scopes=scopes, expires_in_seconds=expires_in_seconds)
        return self._send(self.create_tenant_key, tenant_id, body=body)

    @operation("admin_list_keys")
    def list_tenant_keys(self, tenant_id: str) -> List[ApiKey]:
        """A tenant's keys, live, expired and revoked (never their secrets)."""
        return self._send(self.list_tenant_keys, tenant_id)

    @operation("admin_rotate_key")
    def rotate_tenant_key(self, key_id: str, *, grace_seconds: Optional[int] = None) -> RotatedKey:
        """Rotates any tenant's key: a new key with the same scopes and expiry; the old one keeps
        working for ``grace_seconds`` (default 86400, 0 for none)."""
        body = _drop_none(grace_seconds=grace_seconds)
        return self._send(self.rotate_tenant_key, key_id, body=body)

    @operation("admin_revoke_key")
    def revoke_tenant_key(self, key_id: str) -> ApiKey:
        """Revokes any tenant's key, at once."""
        return self._send(self.revoke_tenant_key, key_id)

    # Payments (operator, or a key with payments:read).

    @operation("list_payments")
    def list_payments(
        self,
        *,
        tenant: Optional[str] = None,
        network: Optional[str] = None,
        status: Optional[str] = None,
        before: Optional[int] = None,
        limit: Optional[int] = None,
    ) -> PaymentsPage:
        """A page of the payments ledger, newest first (``limit`` 1-500, default 50). With an API
        key, only the key's tenant's. Pass ``page.next_before`` as ``before`` for the next page,
        or use :meth:`iter_payments`."""
        query = _drop_none(tenant=tenant, network=network, status=status, before=before, limit=limit)
        return self._send(self.list_payments, query=query)

    def iter_payments(
        self,
        *,
        tenant: Optional[str] = None,
        network: Optional[str] = None,
        status: Optional[str] = None,
        page_size: int = 100,
    ) -> Iterator[Payment]:
        """Every payment matching the filters, newest first, fetched a page at a time."""
        before: Optional[int] = None
        while True:
            page = self.list_payments(
                tenant=tenant, network=network, status=status, before=before, limit=page_size
            )
            yield from page.payments
            if page.next_before is None:
                return
            before = page.next_before

    # The tenant's own keys (a key with keys:write).

    @operation("own_create_key")
    def create_key(
        self, *, scopes: Optional[List[str]] = None, expires_in_seconds: Optional[int] = None
    ) -> NewKey:
        """Mints a key for the caller's tenant, by default with the caller's scopes (asking for a
        scope the caller does not hold raises :class:`ScopeNotHeldError`)."""
        body = _drop_none(scopes=scopes, expires_in_seconds=expires_in_seconds)
        return self._send(self.create_key, body=body)

    @operation("own_list_keys")
    def list_keys(self) -> List[ApiKey]:
        """The caller's tenant's keys."""
        return self._send(self.list_keys)

    @operation("own_rotate_key")
    def rotate_key(self, key_id: str, *, grace_seconds: Optional[int] = None) -> RotatedKey:
        """Rotates one of the tenant's keys (see :meth:`rotate_tenant_key`)."""
        body = _drop_none(grace_seconds=grace_seconds)
        return self._send(self.rotate_key, key_id, body=body)

    @operation("own_revoke_key")
    def revoke_key(self, key_id: str) -> ApiKey:
        """Revokes one of the tenant's keys, at once (it may be the caller's own)."""
        return self._send(self.revoke_key, key_id)

    # The verify API (a key with verify).

    @operation("verify", body="VerifyPaymentRequest")
    def verify_payment(
        self,
        payment_payload: Dict[str, Any],
        payment_requirements: Dict[str, Any],
        *,
        x402_version: Optional[int] = None,
    ) -> VerificationResult:
        """Verifies an x402 payment payload against the requirements it pays (the facilitator
        ``/verify`` shape), for the caller's tenant. A valid answer counts toward the tenant's
        monthly quota; a cached repeat (``cached=True``) does not. An invalid payment is an
        answer (``is_valid=False`` with ``invalid_reason``), not an exception.

        Raises:
            QuotaExceededError: this month's verified payments are used up.
            NetworkNotAllowedError: the tenant's tier does not allow the network.
            VerificationUnavailableError: the chain does not answer.
        """
        body = _drop_none(
            x402Version=x402_version,
            paymentPayload=payment_payload,
            paymentRequirements=payment_requirements,
        )
        return self._send(self.verify_payment, body=body)

    @operation("verify", body="VerifyTransactionRequest")
    def verify_transaction(
        self, tx_hash: str, chain: str, expected_amount: str, recipient: str
    ) -> VerificationResult:
        """Verifies a mined transfer to ``recipient`` of at least ``expected_amount`` atomic
        units (a decimal string; an int is accepted) of an asset the gateway accepts on ``chain``
        (a CAIP-2 id such as ``eip155:8453``, or a v1 name such as ``base``). Each transaction
        counts once per tenant: a second check answers ``invalid_reason="tx_already_used"``."""
        body = {
            "tx_hash": tx_hash,
            "chain": chain,
            "expected_amount": str(expected_amount),
            "recipient": recipient,
        }
        return self._send(self.verify_transaction, body=body)

    # Usage (a key with usage:read), chains, health.

    @operation("usage")
    def get_usage(self, *, tenant: Optional[str] = None) -> Usage:
        """A tenant's usage this UTC month: verified payments, limit, remaining, revenue by
        route, network and asset, and a daily series. With an API key, its own tenant's; the
        operator names the ``tenant``."""
        return self._send(self.get_usage, query=_drop_none(tenant=tenant))

    @operation("supported_chains")
    def get_supported_chains(self) -> SupportedChains:
        """The networks and assets this gateway accepts; with an API key, ``allowed`` says which
        the caller's tier allows."""
        return self._send(self.get_supported_chains)

    @operation("health")
    def health(self) -> HealthStatus:
        """Liveness: ``status == "ok"`` when the process answers."""
        return self._send(self.health)

    @operation("ready")
    def ready(self) -> Readiness:
        """Readiness (store, RPCs, settler gas). A 503 ``not_ready`` is returned, not raised:
        check ``.is_ready`` or ``.status``."""
        return self._send(self.ready)

    # Routes (a key with routes:write for its own; the operator for any tenant).

    @operation("list_routes")
    def list_routes(self, *, tenant: Optional[str] = None) -> RouteList:
        """Routes: with an API key, its tenant's (the file's and the API's); for the operator,
        every tenant's, or ``tenant``'s."""
        return self._send(self.list_routes, query=_drop_none(tenant=tenant))

    @operation("create_route")
    def create_route(self, spec: Dict[str, Any]) -> Route:
        """Creates a route from its fields, as a ``[[routes]]`` entry writes them
        (``{"path": "/acme/data/*", "upstream": "https://api.acme.test", "price": "$0.01"}``;
        the operator adds ``"tenant"``). It must lie in the tenant's namespace
        (:meth:`set_namespace`). Raises :class:`InvalidRouteError` with each field's error."""
        return self._send(self.create_route, body=spec)

    @operation("update_route")
    def update_route(self, route_id: str, spec: Dict[str, Any]) -> Route:
        """Changes some of a route's fields (``{"price": "$0.02"}``). The file's routes
        (``config:…``) raise :class:`ConfigRouteError`."""
        return self._send(self.update_route, route_id, body=spec)

    @operation("delete_route")
    def delete_route(self, route_id: str) -> None:
        """Deletes a route written through the API."""
        return self._send(self.delete_route, route_id)

    @operation("set_namespace")
    def set_namespace(
        self, tenant_id: str, *, hosts: Optional[List[str]] = None, path_prefix: Optional[str] = None
    ) -> Namespace:
        """Sets where a tenant's routes may live (operator): host names its routes may match,
        and a path prefix (``/acme``) its host-less routes must live under. Raises
        :class:`NamespaceTakenError` if another tenant holds one of them."""
        body = _drop_none(hosts=hosts, path_prefix=path_prefix)
        return self._send(self.set_namespace, tenant_id, body=body)

    # Plans and billing (a tenant's key).

    @operation("billing")
    def get_billing(self) -> BillingInfo:
        """The caller's tenant's plan, how it is billed, and the plans on sale."""
        return self._send(self.get_billing)

    @operation("checkout")
    def checkout(self, tier: str) -> CheckoutSession:
        """Starts a Stripe Checkout session for the caller's tenant to subscribe to ``tier``;
        send the tenant to ``.url``. Raises :class:`BillingDisabledError` without Stripe billing,
        :class:`NotForSaleError` for a tier not sold through Stripe."""
        return self._send(self.checkout, body={"tier": tier})

    @operation("upgrade")
    def upgrade_plan(self, tier: str, *, payment_signature: Optional[str] = None) -> PlanUpgrade:
        """Moves the caller's tenant to ``tier``, paid with x402 to the operator. Without
        ``payment_signature`` this raises :class:`PaymentRequiredError`, whose
        ``payment_required`` is the challenge: pay it with an x402 client and call again with the
        ``PAYMENT-SIGNATURE`` it makes. The tier changes once the payment is settled on chain."""
        headers = {"payment-signature": payment_signature} if payment_signature else None
        return self._send(self.upgrade_plan, body={"tier": tier}, headers=headers)

    # The configuration (operator).

    @operation("reload_config")
    def reload_config(self) -> ReloadReport:
        """Re-reads the gateway's config file, as SIGHUP does. A refused file (422, ``result``
        ``invalid`` with every ``errors`` entry) or one the database could not take (503,
        ``failed``) is returned, not raised: nothing changed then, and the running config keeps
        serving. Raises :class:`ReloadUnavailableError` if the gateway was not started from a
        file."""
        return self._send(self.reload_config)

    def openapi(self) -> Dict[str, Any]:
        """The OpenAPI document the gateway serves (``/api/v1/openapi.json``)."""
        op = Operation("openapi", "GET", "/api/v1/openapi.json", "none", retry=True)
        return self._send_op(op, None)


class AsyncX402Client(_Base):
    """The asyncio twin of :class:`X402Client`: the same arguments and methods, awaited.

    ::

        async with AsyncX402Client("http://127.0.0.1:8403", api_key="x402_live_…") as client:
            usage = await client.get_usage()
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        api_key: Optional[str] = None,
        admin_token: Optional[str] = None,
        timeout: float = 30.0,
        max_retries: int = 2,
        backoff: float = 0.25,
        max_backoff: float = 8.0,
        headers: Optional[Mapping[str, str]] = None,
        transport: Optional[httpx.AsyncBaseTransport] = None,
    ) -> None:
        super().__init__(
            base_url,
            api_key=api_key,
            admin_token=admin_token,
            timeout=timeout,
            max_retries=max_retries,
            backoff=backoff,
            max_backoff=max_backoff,
            headers=headers,
        )
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport)

    async def aclose(self) -> None:
        """Closes the connections."""
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncX402Client":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def _send(self, method: Any, *path_args: str, query=None, body=None, headers=None) -> Any:
        returns = self._returns(method)
        return await self._send_op(method.__x402_operation__, returns, *path_args, query=query, body=body, headers=headers)

    async def _send_op(self, op: Operation, returns: Any, *path_args: str, query=None, body=None, headers=None) -> Any:
        req = self._request(op, path_args, query, body, headers)
        attempt = 0
        while True:
            try:
                resp = await self._http.request(**req)
            except httpx.TransportError as e:
                delay = self._retry_delay(op, attempt, None)
                if delay is None:
                    raise TransportError(f"{op.method} {req['url']}: {e!r}") from e
            else:
                delay = self._retry_delay(op, attempt, resp)
                if delay is None:
                    return self._answer(op, resp, returns)
            await asyncio.sleep(delay)
            attempt += 1

    @operation("create_tenant")
    async def create_tenant(
        self,
        email: str,
        tier: str,
        *,
        name: Optional[str] = None,
        id: Optional[str] = None,
        pay_to: Optional[Dict[str, str]] = None,
    ) -> CreatedTenant:
        """See :meth:`X402Client.create_tenant`."""
        body = _drop_none(email=email, tier=tier, name=name, id=id, pay_to=pay_to)
        return await self._send(self.create_tenant, body=body)

    @operation("list_tenants")
    async def list_tenants(self) -> List[Tenant]:
        """See :meth:`X402Client.list_tenants`."""
        return await self._send(self.list_tenants)

    @operation("get_tenant")
    async def get_tenant(self, tenant_id: str) -> Tenant:
        """See :meth:`X402Client.get_tenant`."""
        return await self._send(self.get_tenant, tenant_id)

    @operation("update_tenant")
    async def update_tenant(
        self,
        tenant_id: str,
        *,
        name: Optional[str] = None,
        tier: Optional[str] = None,
        pay_to: Optional[Dict[str, str]] = None,
    ) -> Tenant:
        """See :meth:`X402Client.update_tenant`."""
        body = _drop_none(name=name, tier=tier, pay_to=pay_to)
        return await self._send(self.update_tenant, tenant_id, body=body)

    @operation("suspend_tenant")
    async def suspend_tenant(self, tenant_id: str) -> Tenant:
        """See :meth:`X402Client.suspend_tenant`."""
        return await self._send(self.suspend_tenant, tenant_id)

    @operation("activate_tenant")
    async def activate_tenant(self, tenant_id: str) -> Tenant:
        """See :meth:`X402Client.activate_tenant`."""
        return await self._send(self.activate_tenant, tenant_id)

    @operation("admin_create_key")
    async def create_tenant_key(
        self,
        tenant_id: str,
        *,
        scopes: Optional[List[str]] = None,
        expires_in_seconds: Optional[int] = None,
    ) -> NewKey:
        """See :meth:`X402Client.create_tenant_key`."""
        body = _drop_none(scopes=scopes, expires_in_seconds=expires_in_seconds)
        return await self._send(self.create_tenant_key, tenant_id, body=body)

    @operation("admin_list_keys")
    async def list_tenant_keys(self, tenant_id: str) -> List[ApiKey]:
        """See :meth:`X402Client.list_tenant_keys`."""
        return await self._send(self.list_tenant_keys, tenant_id)

    @operation("admin_rotate_key")
    async def rotate_tenant_key(self, key_id: str, *, grace_seconds: Optional[int] = None) -> RotatedKey:
        """See :meth:`X402Client.rotate_tenant_key`."""
        body = _drop_none(grace_seconds=grace_seconds)
        return await self._send(self.rotate_tenant_key, key_id, body=body)

    @operation("admin_revoke_key")
    async def revoke_tenant_key(self, key_id: str) -> ApiKey:
        """See :meth:`X402Client.revoke_tenant_key`."""
        return await self._send(self.revoke_tenant_key, key_id)

    @operation("list_payments")
    async def list_payments(
        self,
        *,
        tenant: Optional[str] = None,
        network: Optional[str] = None,
        status: Optional[str] = None,
        before: Optional[int] = None,
        limit: Optional[int] = None,
    ) -> PaymentsPage:
        """See :meth:`X402Client.list_payments`."""
        query = _drop_none(tenant=tenant, network=network, status=status, before=before, limit=limit)
        return await self._send(self.list_payments, query=query)

    async def iter_payments(
        self,
        *,
        tenant: Optional[str] = None,
        network: Optional[str] = None,
        status: Optional[str] = None,
        page_size: int = 100,
    ) -> AsyncIterator[Payment]:
        """See :meth:`X402Client.iter_payments`."""
        before: Optional[int] = None
        while True:
            page = await self.list_payments(
                tenant=tenant, network=network, status=status, before=before, limit=page_size
            )
            for p in page.payments:
                yield p
            if page.next_before is None:
                return
            before = page.next_before

    @operation("own_create_key")
    async def create_key(
        self, *, scopes: Optional[List[str]] = None, expires_in_seconds: Optional[int] = None
    ) -> NewKey:
        """See :meth:`X402Client.create_key`."""
        body = _drop_none(scopes=scopes, expires_in_seconds=expires_in_seconds)
        return await self._send(self.create_key, body=body)

    @operation("own_list_keys")
    async def list_keys(self) -> List[ApiKey]:
        """See :meth:`X402Client.list_keys`."""
        return await self._send(self.list_keys)

    @operation("own_rotate_key")
    async def rotate_key(self, key_id: str, *, grace_seconds: Optional[int] = None) -> RotatedKey:
        """See :meth:`X402Client.rotate_key`."""
        body = _drop_none(grace_seconds=grace_seconds)
        return await self._send(self.rotate_key, key_id, body=body)

    @operation("own_revoke_key")
    async def revoke_key(self, key_id: str) -> ApiKey:
        """See :meth:`X402Client.revoke_key`."""
        return await self._send(self.revoke_key, key_id)

    @operation("verify", body="VerifyPaymentRequest")
    async def verify_payment(
        self,
        payment_payload: Dict[str, Any],
        payment_requirements: Dict[str, Any],
        *,
        x402_version: Optional[int] = None,
    ) -> VerificationResult:
        """See :meth:`X402Client.verify_payment`."""
        body = _drop_none(
            x402Version=x402_version,
            paymentPayload=payment_payload,
            paymentRequirements=payment_requirements,
        )
        return await self._send(self.verify_payment, body=body)

    @operation("verify", body="VerifyTransactionRequest")
    async def verify_transaction(
        self, tx_hash: str, chain: str, expected_amount: str, recipient: str
    ) -> VerificationResult:
        """See :meth:`X402Client.verify_transaction`."""
        body = {
            "tx_hash": tx_hash,
            "chain": chain,
            "expected_amount": str(expected_amount),
            "recipient": recipient,
        }
        return await self._send(self.verify_transaction, body=body)

    @operation("usage")
    async def get_usage(self, *, tenant: Optional[str] = None) -> Usage:
        """See :meth:`X402Client.get_usage`."""
        return await self._send(self.get_usage, query=_drop_none(tenant=tenant))

    @operation("list_tiers")
    async def list_tiers(self) -> List[Tier]:
        """See :meth:`X402Client.list_tiers`."""
        return await self._send(self.list_tiers)

    @operation("supported_chains")
    async def get_supported_chains(self) -> SupportedChains:
        """See :meth:`X402Client.get_supported_chains`."""
        return await self._send(self.get_supported_chains)

    @operation("health")
    async def health(self) -> HealthStatus:
        """See :meth:`X402Client.health`."""
        return await self._send(self.health)

    @operation("ready")
    async def ready(self) -> Readiness:
        """See :meth:`X402Client.ready`."""
        return await self._send(self.ready)

    @operation("list_routes")
    async def list_routes(self, *, tenant: Optional[str] = None) -> RouteList:
        """See :meth:`X402Client.list_routes`."""
        return await self._send(self.list_routes, query=_drop_none(tenant=tenant))

    @operation("create_route")
    async def create_route(self, spec: Dict[str, Any]) -> Route:
        """See :meth:`X402Client.create_route`."""
        return await self._send(self.create_route, body=spec)

    @operation("update_route")
    async def update_route(self, route_id: str, spec: Dict[str, Any]) -> Route:
        """See :meth:`X402Client.update_route`."""
        return await self._send(self.update_route, route_id, body=spec)

    @operation("delete_route")
    async def delete_route(self, route_id: str) -> None:
        """See :meth:`X402Client.delete_route`."""
        return await self._send(self.delete_route, route_id)

    @operation("set_namespace")
    async def set_namespace(
        self, tenant_id: str, *, hosts: Optional[List[str]] = None, path_prefix: Optional[str] = None
    ) -> Namespace:
        """See :meth:`X402Client.set_namespace`."""
        body = _drop_none(hosts=hosts, path_prefix=path_prefix)
        return await self._send(self.set_namespace, tenant_id, body=body)

    @operation("billing")
    async def get_billing(self) -> BillingInfo:
        """See :meth:`X402Client.get_billing`."""
        return await self._send(self.get_billing)

    @operation("checkout")
    async def checkout(self, tier: str) -> CheckoutSession:
        """See :meth:`X402Client.checkout`."""
        return await self._send(self.checkout, body={"tier": tier})

    @operation("upgrade")
    async def upgrade_plan(self, tier: str, *, payment_signature: Optional[str] = None) -> PlanUpgrade:
        """See :meth:`X402Client.upgrade_plan`."""
        headers = {"payment-signature": payment_signature} if payment_signature else None
        return await self._send(self.upgrade_plan, body={"tier": tier}, headers=headers)

    @operation("reload_config")
    async def reload_config(self) -> ReloadReport:
        """See :meth:`X402Client.reload_config`."""
        return await self._send(self.reload_config)

    async def openapi(self) -> Dict[str, Any]:
        """See :meth:`X402Client.openapi`."""
        op = Operation("openapi", "GET", "/api/v1/openapi.json", "none", retry=True)
        return await self._send_op(op, None)

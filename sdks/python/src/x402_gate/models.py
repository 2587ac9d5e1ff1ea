"""The management API's response bodies, as dataclasses.

Each model names the OpenAPI schema it mirrors in ``__schema__``; the SDK's tests check every
model against the document the gateway serves (fields, which are required, their types), so a
drift between the two fails a test. Fields keep the API's names, except the camelCase fields of
the verify answer (``isValid`` is ``is_valid``). Unknown fields in an answer are ignored, so a
newer gateway does not break an older SDK.

Amounts are strings of atomic units (``"10000"`` is $0.01 of a 6-decimal token), as the API
sends them; timestamps are Unix seconds.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Optional, Type, TypeVar, Union

__all__ = [
    "Model",
    "Tenant",
    "ApiKey",
    "NewKey",
    "CreatedTenant",
    "RotatedKey",
    "Payment",
    "PaymentsPage",
    "VerificationResult",
    "Revenue",
    "DailyUsage",
    "Usage",
    "Asset",
    "Chain",
    "SupportedChains",
    "HealthStatus",
    "StoreHealth",
    "SettlerReadiness",
    "NetworkReadiness",
    "Readiness",
    "PendingChange",
    "ConfigProblem",
    "ReloadReport",
    "Tier",
    "BillingInfo",
    "CheckoutSession",
    "PlanUpgrade",
    "Route",
    "RouteList",
    "Namespace",
    "RouteFieldError",
    "MODELS",
    "parse",
]

M = TypeVar("M", bound="Model")


def _json(name: str, **kwargs: Any) -> Any:
    """A field whose JSON name differs from its Python name."""
    return field(metadata={"json": name}, **kwargs)


def json_name(f: dataclasses.Field) -> str:
    """The JSON name of a model's field."""
    return f.metadata.get("json", f.name)


def parse(tp: Any, value: Any) -> Any:
    """``value`` (decoded JSON) as the type ``tp``: models, lists, dicts and Optionals."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin is Union:
        if value is None:
            return None
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return parse(args[0], value)
    if origin in (list, List):
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise TypeError(f"expected a list, got {type(value).__name__}")
        return [parse(item, v) for v in value]
    if origin in (dict, Dict):
        _, item = typing.get_args(tp)
        if not isinstance(value, dict):
            raise TypeError(f"expected an object, got {type(value).__name__}")
        return {k: parse(item, v) for k, v in value.items()}
    if isinstance(tp, type) and issubclass(tp, Model):
        return tp.from_json(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(tp, type) and not isinstance(value, tp):
        raise TypeError(f"expected {tp.__name__}, got {type(value).__name__}")
    return value


class Model:
    """Base of the models: built from the API's JSON with :meth:`from_json`."""

    #: The OpenAPI schema (``components.schemas``) this model mirrors.
    __schema__: ClassVar[str] = ""
    #: A field that takes every key the model does not name (a schema with free-form fields
    #: beside its named ones, such as a route's), or "".
    __rest__: ClassVar[str] = ""

    @classmethod
    def from_json(cls: Type[M], data: Any) -> M:
        """Builds the model from a decoded JSON object (unknown keys are ignored)."""
        if not isinstance(data, dict):
            raise TypeError(f"{cls.__name__}: expected an object, got {type(data).__name__}")
        hints = typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))
        kwargs = {}
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        if cls.__rest__:
            named = {json_name(f) for f in fields if f.name != cls.__rest__}
            kwargs[cls.__rest__] = {k: v for k, v in data.items() if k not in named}
        for f in fields:
            if f.name == cls.__rest__:
                continue
            key = json_name(f)
            if key in data:
                try:
                    kwargs[f.name] = parse(hints[f.name], data[key])
                except TypeError as e:
                    raise TypeError(f"{cls.__name__}.{f.name}: {e}") from None
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise TypeError(f"{cls.__name__}: the answer has no `{key}`")
        return cls(**kwargs)

    def to_json(self) -> Dict[str, Any]:
        """The model as the API's JSON (its field names)."""
        out: Dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if f.name == self.__rest__:
                out.update(_to_json(getattr(self, f.name)))
            else:
                out[json_name(f)] = _to_json(getattr(self, f.name))
        return out


def _to_json(value: Any) -> Any:
    if isinstance(value, Model):
        return value.to_json()
    if isinstance(value, list):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    return value


@dataclass(frozen=True, kw_only=True)
class Tenant(Model):
    """A tenant: an API provider with payout addresses, a tier and a status."""

    __schema__ = "TenantView"
    id: str
    name: str
    email: Optional[str] = None
    #: ``free``, ``starter``, ``pro``, ``enterprise`` or a tier of the gateway's config.
    tier: str
    #: ``active`` or ``suspended``.
    status: str
    #: CAIP-2 network -> payout address.
    pay_to: Dict[str, str]
    #: ``config`` (declared in the TOML) or ``api``.
    source: str
    created_at: int
    updated_at: int


@dataclass(frozen=True, kw_only=True)
class ApiKey(Model):
    """An API key as listed: its secret is never shown again, only its lookup prefix."""

    __schema__ = "KeyView"
    id: str
    tenant_id: str
    prefix: str
    #: Among ``verify``, ``usage:read``, ``keys:write``, ``payments:read``.
    scopes: List[str]
    created_at: int
    expires_at: Optional[int] = None
    revoked_at: Optional[int] = None
    last_used_at: Optional[int] = None
    #: The key that replaced this one, after a rotation.
    replaced_by: Optional[str] = None


@dataclass(frozen=True, kw_only=True)
class NewKey(ApiKey):
    """A key just minted: ``key`` is the secret (``x402_live_…``), shown this once."""

    __schema__ = "NewKey"
    key: str = field(repr=False)


@dataclass(frozen=True, kw_only=True)
class CreatedTenant(Model):
    """A new tenant and its first API key (holding every scope)."""

    __schema__ = "CreatedTenant"
    tenant: Tenant
    api_key: NewKey


@dataclass(frozen=True, kw_only=True)
class RotatedKey(Model):
    """A rotation: the new key, and the old one (working until its ``revoked_at``)."""

    __schema__ = "RotatedKey"
    new_key: NewKey
    old_key: ApiKey


@dataclass(frozen=True, kw_only=True)
class Payment(Model):
    """A payment in the ledger."""

    __schema__ = "PaymentView"
    id: int
    tenant: str
    route: str
    network: str
    asset: str
    payer: str
    #: Atomic units, decimal.
    amount: str
    #: ``claimed``, ``settling``, ``settled``, ``queued``, ``released`` or ``failed``.
    status: str
    tx_hash: Optional[str] = None
    #: Why it was not settled: ``reason_code: message`` (scrubbed of URLs and keys).
    error: Optional[str] = None
    #: The reason code of ``error``.
    error_reason: Optional[str] = None
    claimed_at: int


@dataclass(frozen=True, kw_only=True)
class PaymentsPage(Model):
    """A page of payments, newest first; pass ``next_before`` as ``before`` for the next."""

    __schema__ = "PaymentsPage"
    payments: List[Payment]
    next_before: Optional[int] = None


@dataclass(frozen=True, kw_only=True)
class VerificationResult(Model):
    """The verify API's answer, for a payment payload or an on-chain transaction.

    ``bool(result)`` is ``result.is_valid``.
    """

    __schema__ = "VerifyResult"
    is_valid: bool = _json("isValid")
    #: Why it is not valid: an x402 reason (``invalid_exact_evm_payload_signature``) or, for a
    #: transaction, ``tx_not_found``, ``tx_already_used``, ``insufficient_amount``, ….
    invalid_reason: Optional[str] = _json("invalidReason", default=None)
    invalid_message: Optional[str] = _json("invalidMessage", default=None)
    payer: Optional[str] = None
    #: Atomic units: the authorized or transferred amount.
    amount: Optional[str] = None
    asset: Optional[str] = None
    #: Whether the answer came from the cache (cached answers are not counted again).
    cached: bool

    def __bool__(self) -> bool:
        return self.is_valid


@dataclass(frozen=True, kw_only=True)
class Revenue(Model):
    """This month's revenue of one route on one network and asset."""

    __schema__ = "RevenueView"
    route: str
    network: str
    asset: str
    payments: int
    #: Atomic units, decimal.
    amount: str


@dataclass(frozen=True, kw_only=True)
class DailyUsage(Model):
    """Verified payments of one UTC day."""

    __schema__ = "DayView"
    #: ``YYYY-MM-DD``.
    day: str
    payments: int


@dataclass(frozen=True, kw_only=True)
class Usage(Model):
    """A tenant's usage this UTC month against its tier's limit."""

    __schema__ = "UsageView"
    tenant: str
    tier: str
    #: ``YYYY-MM``.
    period: str
    verified: int
    #: ``None``: unlimited.
    limit: Optional[int] = None
    remaining: Optional[int] = None
    revenue: List[Revenue]
    daily: List[DailyUsage]


@dataclass(frozen=True, kw_only=True)
class Asset(Model):
    """A token the gateway accepts on a network."""

    __schema__ = "AssetView"
    symbol: str
    address: str
    decimals: int


@dataclass(frozen=True, kw_only=True)
class Chain(Model):
    """A network the gateway accepts payments on."""

    __schema__ = "ChainView"
    #: CAIP-2 id (``eip155:8453``).
    network: str
    #: The x402 v1 name (``base``), if it has one.
    v1_name: Optional[str] = None
    assets: List[Asset]
    #: Asked with an API key: whether the caller's tier allows this network.
    allowed: Optional[bool] = None


@dataclass(frozen=True, kw_only=True)
class SupportedChains(Model):
    """The networks and assets this gateway accepts."""

    __schema__ = "SupportedChains"
    chains: List[Chain]
    #: Asked with an API key: the caller's tier.
    tier: Optional[str] = None


@dataclass(frozen=True, kw_only=True)
class HealthStatus(Model):
    """``GET /health``: the process answers."""

    __schema__ = "Status"
    status: str


@dataclass(frozen=True, kw_only=True)
class StoreHealth(Model):
    """Whether the database answered ``/ready``'s check."""

    __schema__ = "StoreHealth"
    ok: bool
    error: Optional[str] = None


@dataclass(frozen=True, kw_only=True)
class SettlerReadiness(Model):
    """A settler key's gas balance."""

    __schema__ = "SettlerReadiness"
    settler: str
    #: Smallest native unit (wei), decimal.
    balance: str
    #: Whether this instance holds the key's lease.
    held: bool
    below_floor: bool


@dataclass(frozen=True, kw_only=True)
class NetworkReadiness(Model):
    """One network as ``/ready`` sees it."""

    __schema__ = "NetworkReadiness"
    network: str
    checked: bool
    rpc_ok: bool
    last_answer_seconds_ago: Optional[float] = None
    error: Optional[str] = None
    block: Optional[int] = None
    min_settler_balance: Optional[str] = None
    settlers: List[SettlerReadiness]


@dataclass(frozen=True, kw_only=True)
class Readiness(Model):
    """``GET /ready``: ``ready``, ``degraded`` (serving, with warnings) or ``not_ready``."""

    __schema__ = "Readiness"
    status: str
    reasons: List[str]
    warnings: List[str]
    store: StoreHealth
    networks: List[NetworkReadiness]

    @property
    def is_ready(self) -> bool:
        """``ready`` or ``degraded``: the gateway serves."""
        return self.status != "not_ready"


@dataclass(frozen=True, kw_only=True)
class PendingChange(Model):
    """A change in the config file that waits for a restart (its key path and why)."""

    __schema__ = "Pending"
    path: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class ConfigProblem(Model):
    """One error of a config file the gateway refused to reload (a model, not an exception)."""

    __schema__ = "FileError"
    #: The key path (``routes[2].price``), empty for the file as a whole.
    path: str
    message: str


@dataclass(frozen=True, kw_only=True)
class ReloadReport(Model):
    """What a config reload did: ``applied``, ``invalid`` (the file's ``errors``; nothing
    changed) or ``failed`` (the database could not take the file's tenants; nothing changed).

    ``bool(report)`` is whether it was applied.
    """

    __schema__ = "ReloadReport"
    #: ``applied``, ``invalid`` or ``failed``.
    result: str
    #: The file that was read.
    file: str
    #: Key paths now running with the file's values (``routes[3]``, ``tenants."acme"``, …).
    applied: List[str]
    restart_required: List[PendingChange]
    errors: List[ConfigProblem]
    #: Why a valid file could not be applied (``failed``).
    message: Optional[str] = None

    def __bool__(self) -> bool:
        return self.result == "applied"


@dataclass(frozen=True, kw_only=True)
class Tier(Model):
    """A plan of the gateway's config."""

    __schema__ = "TierView"
    name: str
    #: ``None``: unlimited.
    monthly_verifications: Optional[int] = None
    #: CAIP-2 ids or patterns (``solana:*``, ``*``).
    networks: List[str]


@dataclass(frozen=True, kw_only=True)
class BillingInfo(Model):
    """A tenant's plan and how it is billed, and the plans on sale."""

    __schema__ = "BillingView"
    tenant: str
    tier: str
    #: ``stripe`` or ``x402``, when the plan has ever been billed.
    source: Optional[str] = None
    #: ``active``, ``past_due`` or ``canceled``, when billed.
    status: Optional[str] = None
    #: x402 plans: the end of the paid period (Unix seconds).
    paid_until: Optional[int] = None
    #: Tiers sold for x402, with their price per period.
    x402_prices: Dict[str, str]
    #: Tiers sold through Stripe Checkout.
    stripe_tiers: List[str]


@dataclass(frozen=True, kw_only=True)
class CheckoutSession(Model):
    """A Stripe Checkout session: send the tenant to ``url`` to pay."""

    __schema__ = "CheckoutView"
    id: str
    url: str


@dataclass(frozen=True, kw_only=True)
class PlanUpgrade(Model):
    """A plan paid with x402: the new tier, until when, and the settlement."""

    __schema__ = "UpgradeView"
    tenant: str
    tier: str
    paid_until: int
    transaction: str
    network: str
    payer: Optional[str] = None


@dataclass(frozen=True, kw_only=True)
class Route(Model):
    """A route: where it comes from, and its fields as a ``[[routes]]`` entry writes them
    (``spec``; the API sends them beside ``id``, ``tenant``, ``source`` and ``served``)."""

    __schema__ = "RouteView"
    __rest__ = "spec"
    #: ``r_…`` for API routes; ``config:<index>`` for the file's (read-only here).
    id: str
    tenant: str
    #: ``api`` or ``config``.
    source: str
    #: Whether this instance serves it (an API route that no longer validates is kept, unserved).
    served: bool
    #: ``path``, ``upstream``, ``price``, ``host``, ``methods``, ``networks``, ``settle``, ….
    spec: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class RouteList(Model):
    """Routes: a tenant's own, or (for the operator) every tenant's or one's."""

    __schema__ = "RouteList"
    routes: List[Route]


@dataclass(frozen=True, kw_only=True)
class Namespace(Model):
    """Where a tenant's routes may live: host names, and a path prefix for host-less routes."""

    __schema__ = "NamespaceBody"
    hosts: List[str] = field(default_factory=list)
    path_prefix: Optional[str] = None


@dataclass(frozen=True, kw_only=True)
class RouteFieldError(Model):
    """One field's error in a route that does not validate (see ``InvalidRouteError.fields``)."""

    __schema__ = "FieldError"
    #: The field (``price``, ``methods[1]``), empty for the route as a whole.
    field: str
    message: str


#: Every model, by the OpenAPI schema it mirrors.
MODELS: Dict[str, Type[Model]] = {
    cls.__schema__: cls
    for cls in [
        Tenant,
        ApiKey,
        NewKey,
        CreatedTenant,
        RotatedKey,
        Payment,
        PaymentsPage,
        VerificationResult,
        Revenue,
        DailyUsage,
        Usage,
        Asset,
        Chain,
        SupportedChains,
        HealthStatus,
        StoreHealth,
        SettlerReadiness,
        NetworkReadiness,
        Readiness,
        PendingChange,
        ConfigProblem,
        ReloadReport,
        Tier,
        BillingInfo,
        CheckoutSession,
        PlanUpgrade,
        Route,
        RouteList,
        Namespace,
        RouteFieldError,
    ]
}

"""The SDK against the real gateway (started by tests/sdks.rs with a real chain, after one paid
request): tenants, keys, usage, payments, verification, and each kind of error."""

from __future__ import annotations

import copy
import uuid

import pytest

from x402_gate import (
    ApiError,
    ApiKey,
    AsyncX402Client,
    BadRequestError,
    BillingDisabledError,
    ConfigRouteError,
    CreatedTenant,
    ForbiddenError,
    InsufficientScopeError,
    InvalidRouteError,
    KeyNotLiveError,
    NamespaceTakenError,
    NetworkNotAllowedError,
    NewKey,
    NotFoundError,
    QuotaExceededError,
    ReloadUnavailableError,
    Route,
    ScopeNotHeldError,
    TenantExistsError,
    TenantSuspendedError,
    TooManyRequestsError,
    UnauthorizedError,
    ValidationError,
    VerificationResult,
    X402Client,
)

ALL_SCOPES = ["verify", "usage:read", "keys:write", "payments:read", "routes:write"]


def tenant_client(gate, key: str) -> X402Client:
    return X402Client(gate.url, api_key=key)


def test_health_and_readiness(gate):
    with X402Client(gate.url) as anyone:
        assert anyone.health().status == "ok"
        ready = anyone.ready()
        assert ready.is_ready, ready
        assert ready.store.ok
        networks = {n.network: n for n in ready.networks}
        assert networks[gate.network].rpc_ok
        assert networks[gate.network].block is not None


def test_create_get_list_update_suspend_and_activate_a_tenant(admin, new_tenant, gate):
    created = new_tenant("starter", pay_to={gate.network: gate.pay_to})
    assert isinstance(created, CreatedTenant)
    t = created.tenant
    assert (t.tier, t.status, t.source) == ("starter", "active", "api")
    assert t.pay_to == {gate.network: gate.pay_to}
    assert created.api_key.key.startswith("x402_live_")
    assert sorted(created.api_key.scopes) == sorted(ALL_SCOPES)
    assert created.api_key.tenant_id == t.id
    # The secret is not in the repr (logs).
    assert created.api_key.key not in repr(created)

    assert admin.get_tenant(t.id) == t
    assert t.id in [x.id for x in admin.list_tenants()]
    assert gate.paid_tenant in [x.id for x in admin.list_tenants()]

    updated = admin.update_tenant(t.id, name="Renamed", tier="free")
    assert (updated.name, updated.tier) == ("Renamed", "free")
    assert admin.suspend_tenant(t.id).status == "suspended"
    with tenant_client(gate, created.api_key.key) as me:
        with pytest.raises(TenantSuspendedError) as e:
            me.verify_transaction(gate.paid_tx, gate.network, gate.paid_amount, gate.pay_to)
        assert (e.value.status, e.value.code) == (403, "tenant_suspended")
        assert isinstance(e.value, ForbiddenError)
    assert admin.activate_tenant(t.id).status == "active"


def test_usage_and_payments_after_a_real_payment(admin, gate):
    # The operator mints a key for the tenant whose route was paid.
    key = admin.create_tenant_key(gate.paid_tenant, scopes=["usage:read", "payments:read"])
    assert isinstance(key, NewKey) and key.scopes == ["usage:read", "payments:read"]
    with tenant_client(gate, key.key) as me:
        usage = me.get_usage()
        assert usage.tenant == gate.paid_tenant
        assert usage.tier == "free"
        assert usage.verified >= 1
        assert usage.limit == 1000 and usage.remaining == usage.limit - usage.verified
        assert len(usage.period) == 7
        paid = [r for r in usage.revenue if r.route == "/paid/*" and r.network == gate.network]
        assert paid and paid[0].payments >= 1
        assert int(paid[0].amount) >= int(gate.paid_amount)
        assert sum(d.payments for d in usage.daily) >= 1

        # The tenant's own ledger holds the payment and its settlement.
        page = me.list_payments()
        mine = [p for p in page.payments if p.tx_hash == gate.paid_tx]
        assert len(mine) == 1, page
        p = mine[0]
        assert (p.status, p.tenant, p.amount, p.network) == (
            "settled",
            gate.paid_tenant,
            gate.paid_amount,
            gate.network,
        )
        assert p.payer.lower() == gate.payer.lower()
        assert p.error is None
        # A key reaches only its own tenant's payments.
        with pytest.raises(NotFoundError):
            me.list_payments(tenant="someone-else")

    # The operator reads any tenant's usage, naming it.
    assert admin.get_usage(tenant=gate.paid_tenant).verified == usage.verified
    with pytest.raises(BadRequestError):
        admin.get_usage()
    tiers = {t.name: t for t in admin.list_tiers()}
    assert tiers["free"].monthly_verifications == 1000
    assert tiers["tiny"].monthly_verifications == 1 and tiers["tiny"].networks == [gate.network]

    # The operator sees them too, a page at a time.
    page = admin.list_payments(tenant=gate.paid_tenant, status="settled", limit=1)
    assert len(page.payments) == 1
    every = list(admin.iter_payments(tenant=gate.paid_tenant, page_size=1))
    assert gate.paid_tx in [p.tx_hash for p in every]
    assert [p.id for p in every] == sorted((p.id for p in every), reverse=True)


def test_verify_a_payment_payload(new_tenant, gate):
    created = new_tenant()
    payload = gate.payment["paymentPayload"]
    requirements = gate.payment["paymentRequirements"]
    with tenant_client(gate, created.api_key.key) as me:
        result = me.verify_payment(payload, requirements, x402_version=2)
        assert isinstance(result, VerificationResult)
        assert result, result
        assert result.is_valid and not result.cached
        assert result.payer.lower() == gate.payer.lower()
        assert result.amount == requirements["amount"]
        assert result.invalid_reason is None
        again = me.verify_payment(payload, requirements)
        assert again.is_valid and again.cached

        # Requirements that the payload does not pay: an answer, not an exception.
        other = copy.deepcopy(requirements)
        other["amount"] = "1"
        bad = me.verify_payment(payload, other)
        assert not bad
        assert bad.invalid_reason == "no_matching_payment_requirements"
        assert me.get_usage().verified == 1


def test_verify_a_transaction_once_per_tenant(new_tenant, gate):
    created = new_tenant()
    with tenant_client(gate, created.api_key.key) as me:
        result = me.verify_transaction(gate.paid_tx, gate.network, gate.paid_amount, gate.pay_to)
        assert result.is_valid, result
        assert result.amount == gate.paid_amount
        assert result.payer.lower() == gate.payer.lower()
        assert result.asset
        again = me.verify_transaction(gate.paid_tx, gate.network, int(gate.paid_amount), gate.pay_to)
        assert (again.is_valid, again.invalid_reason) == (False, "tx_already_used")
        more = me.verify_transaction(
            gate.paid_tx, gate.network, str(int(gate.paid_amount) + 1), gate.pay_to
        )
        assert not more.is_valid
        nowhere = me.verify_transaction("0x" + "ab" * 32, gate.network, "1", gate.pay_to)
        assert nowhere.invalid_reason == "tx_not_found"


def test_create_list_rotate_and_revoke_keys(admin, new_tenant, gate):
    created = new_tenant()
    first = created.api_key
    with tenant_client(gate, first.key) as me:
        # A tenant's own keys.
        reader = me.create_key(scopes=["usage:read"], expires_in_seconds=3600)
        assert reader.scopes == ["usage:read"]
        assert reader.expires_at is not None and reader.expires_at > reader.created_at
        default = me.create_key()
        assert sorted(default.scopes) == sorted(ALL_SCOPES)
        listed = {k.id: k for k in me.list_keys()}
        assert {first.id, reader.id, default.id} <= set(listed)
        assert all(isinstance(k, ApiKey) for k in listed.values())
        assert listed[first.id].last_used_at is not None

        # Rotation with no grace: the old key stops at once, the new one works.
        rotated = me.rotate_key(reader.id, grace_seconds=0)
        assert rotated.old_key.id == reader.id
        assert rotated.old_key.replaced_by == rotated.new_key.id
        assert rotated.new_key.scopes == ["usage:read"]
        assert rotated.new_key.expires_at == reader.expires_at
        with tenant_client(gate, rotated.new_key.key) as new:
            assert new.get_usage().tenant == created.tenant.id
        with tenant_client(gate, reader.key) as old:
            with pytest.raises(UnauthorizedError):
                old.get_usage()
        # A retired key cannot be rotated again.
        with pytest.raises(KeyNotLiveError) as e:
            me.rotate_key(reader.id)
        assert (e.value.status, e.value.code) == (409, "key_not_live")

        # Rotation with the default grace: both work for now.
        graced = me.rotate_key(default.id)
        assert graced.old_key.revoked_at is None
        assert graced.old_key.expires_at is not None  # now + 24 h
        assert graced.new_key.expires_at is None
        for k in (default.key, graced.new_key.key):
            with tenant_client(gate, k) as c:
                assert c.get_usage().tenant == created.tenant.id

        # Revocation takes effect at once.
        revoked = me.revoke_key(graced.new_key.id)
        assert revoked.revoked_at is not None
        with tenant_client(gate, graced.new_key.key) as c:
            with pytest.raises(UnauthorizedError):
                c.get_usage()

    # The operator's side: any tenant's keys.
    op_key = admin.create_tenant_key(created.tenant.id, scopes=["verify"])
    assert op_key.id in [k.id for k in admin.list_tenant_keys(created.tenant.id)]
    op_rotated = admin.rotate_tenant_key(op_key.id, grace_seconds=60)
    assert op_rotated.new_key.scopes == ["verify"]
    assert admin.revoke_tenant_key(op_rotated.new_key.id).revoked_at is not None
    with tenant_client(gate, op_rotated.new_key.key) as c:
        with pytest.raises(UnauthorizedError):
            c.verify_transaction(gate.paid_tx, gate.network, "1", gate.pay_to)


def test_routes_and_namespaces(admin, new_tenant, gate):
    created = new_tenant(pay_to={gate.network: gate.pay_to})
    tid = created.tenant.id
    ns = admin.set_namespace(tid, path_prefix=f"/{tid}")
    assert (ns.path_prefix, ns.hosts) == (f"/{tid}", [])
    with tenant_client(gate, created.api_key.key) as me:
        route = me.create_route({"path": f"/{tid}/data/*", "upstream": gate.upstream, "price": "$0.01"})
        assert isinstance(route, Route)
        assert (route.tenant, route.source) == (tid, "api")
        assert route.id.startswith("r_") and route.spec["price"] == "$0.01"
        assert route.id in [r.id for r in me.list_routes().routes]
        changed = me.update_route(route.id, {"price": "$0.02", "settle": "before"})
        assert (changed.spec["price"], changed.spec["settle"]) == ("$0.02", "before")

        # A route that does not validate: every field's error.
        with pytest.raises(InvalidRouteError) as e:
            me.create_route({"path": f"/{tid}/x", "upstream": gate.upstream, "price": "lots"})
        assert (e.value.status, e.value.code) == (400, "invalid_route")
        assert "price" in [f.field for f in e.value.fields]
        assert isinstance(e.value, BadRequestError)
        # Outside its namespace.
        with pytest.raises(InvalidRouteError):
            me.create_route({"path": "/elsewhere/*", "upstream": gate.upstream, "price": "$0.01"})

        me.delete_route(route.id)
        with pytest.raises(NotFoundError):
            me.delete_route(route.id)
        assert route.id not in [r.id for r in me.list_routes().routes]

    # The operator sees the file's routes too, and cannot change them here.
    config_routes = [r for r in admin.list_routes(tenant=gate.paid_tenant).routes if r.source == "config"]
    assert config_routes and config_routes[0].spec["path"] == "/paid/*"
    with pytest.raises(ConfigRouteError) as e:
        admin.update_route(config_routes[0].id, {"price": "$9"})
    assert (e.value.status, e.value.code) == (403, "config_route")
    # The operator writes for any tenant, naming it.
    made = admin.create_route({"tenant": tid, "path": f"/{tid}/op", "upstream": gate.upstream, "price": "free"})
    assert made.tenant == tid
    admin.delete_route(made.id)

    # A prefix another tenant holds.
    other = new_tenant()
    with pytest.raises(NamespaceTakenError) as e:
        admin.set_namespace(other.tenant.id, path_prefix=f"/{tid}")
    assert (e.value.status, e.value.code) == (409, "namespace_taken")


def test_billing_without_plans_on_sale(new_tenant, gate):
    # This gateway has no [billing]: the plan is shown, nothing is for sale.
    with tenant_client(gate, new_tenant("starter").api_key.key) as me:
        info = me.get_billing()
        assert (info.tier, info.x402_prices, info.stripe_tiers) == ("starter", {}, [])
        for call in (lambda: me.checkout("pro"), lambda: me.upgrade_plan("pro")):
            with pytest.raises(BillingDisabledError) as e:
                call()
            assert (e.value.status, e.value.code) == (404, "billing_disabled")


def test_supported_chains_with_and_without_a_key(new_tenant, gate):
    with X402Client(gate.url) as anyone:
        chains = anyone.get_supported_chains()
        assert chains.tier is None
        networks = {c.network: c for c in chains.chains}
        assert {gate.network, gate.denied_network} <= set(networks)
        assert networks[gate.network].v1_name == "base-sepolia"
        assert networks[gate.network].assets[0].decimals == 6
        assert networks[gate.network].allowed is None
    with tenant_client(gate, new_tenant().api_key.key) as me:
        chains = me.get_supported_chains()
        assert chains.tier == "free"
        allowed = {c.network: c.allowed for c in chains.chains}
        assert allowed[gate.network] is True
        assert allowed[gate.denied_network] is False


def test_each_error_kind(admin, new_tenant, gate):
    # 401: a wrong admin token, an unknown key, no credential.
    with X402Client(gate.url, admin_token="not-the-token") as wrong:
        with pytest.raises(UnauthorizedError) as e:
            wrong.list_tenants()
        assert (e.value.status, e.value.code) == (401, "unauthorized")
        assert e.value.message and e.value.request_id
    with tenant_client(gate, "x402_live_" + "0" * 48) as unknown:
        with pytest.raises(UnauthorizedError):
            unknown.get_usage()
    with X402Client(gate.url) as nobody:
        with pytest.raises(UnauthorizedError):
            nobody.create_key()
        with pytest.raises(UnauthorizedError):
            nobody.get_tenant(gate.paid_tenant)

    created = new_tenant()
    # 403 insufficient_scope: a key without the operation's scope.
    reader = admin.create_tenant_key(created.tenant.id, scopes=["usage:read"])
    with tenant_client(gate, reader.key) as c:
        with pytest.raises(InsufficientScopeError) as e:
            c.verify_transaction(gate.paid_tx, gate.network, "1", gate.pay_to)
        assert (e.value.status, e.value.code) == (403, "insufficient_scope")
        with pytest.raises(InsufficientScopeError):
            c.list_keys()
    # 403 scope_not_held: a keys:write key granting what it does not hold.
    writer = admin.create_tenant_key(created.tenant.id, scopes=["keys:write"])
    with tenant_client(gate, writer.key) as c:
        with pytest.raises(ScopeNotHeldError) as e:
            c.create_key(scopes=["keys:write", "verify"])
        assert (e.value.status, e.value.code) == (403, "scope_not_held")
        assert "verify" in e.value.message
    # 403 network_not_allowed: the free tier does not allow this network.
    with tenant_client(gate, created.api_key.key) as c:
        with pytest.raises(NetworkNotAllowedError):
            c.verify_transaction(gate.paid_tx, gate.denied_network, "1", gate.pay_to)

    # 404: no such tenant or key; another tenant's key.
    with pytest.raises(NotFoundError) as e:
        admin.get_tenant("no-such-tenant-" + uuid.uuid4().hex[:6])
    assert (e.value.status, e.value.code) == (404, "not_found")
    with pytest.raises(NotFoundError):
        admin.revoke_tenant_key("key_does_not_exist")
    other = new_tenant()
    with tenant_client(gate, created.api_key.key) as c:
        with pytest.raises(NotFoundError):
            c.revoke_key(other.api_key.id)

    # 400: validation.
    with pytest.raises(BadRequestError) as e:
        admin.create_tenant("not-an-email", "free")
    assert (e.value.status, e.value.code) == (400, "bad_request")
    with pytest.raises(ValidationError, match="unknown tier"):
        admin.create_tenant("x@sdk.test", "platinum")
    with pytest.raises(BadRequestError, match="expires_in_seconds"):
        admin.create_tenant_key(created.tenant.id, expires_in_seconds=0)
    with pytest.raises(BadRequestError, match="limit"):
        admin.list_payments(limit=0)
    with tenant_client(gate, created.api_key.key) as c:
        with pytest.raises(BadRequestError):
            c.verify_transaction(gate.paid_tx, "not-a-chain", "1", gate.pay_to)

    # 409: a taken id.
    with pytest.raises(TenantExistsError) as e:
        admin.create_tenant("again@sdk.test", "free", id=created.tenant.id)
    assert (e.value.status, e.value.code) == (409, "tenant_exists")

    # 409: a reload of a gateway not started from a file (the test's gateway was not).
    with pytest.raises(ReloadUnavailableError) as e:
        admin.reload_config()
    assert (e.value.status, e.value.code) == (409, "reload_unavailable")

    # Every one of them is an ApiError.
    assert issubclass(TenantExistsError, ApiError)


def test_the_monthly_quota_is_a_429(new_tenant, gate):
    # The gateway's `tiny` tier allows one verified payment a month.
    created = new_tenant("tiny")
    with tenant_client(gate, created.api_key.key) as me:
        assert me.verify_transaction(gate.paid_tx, gate.network, gate.paid_amount, gate.pay_to)
        with pytest.raises(QuotaExceededError) as e:
            me.verify_payment(gate.payment["paymentPayload"], gate.payment["paymentRequirements"])
        assert (e.value.status, e.value.code) == (429, "tenant_quota_exceeded")
        assert isinstance(e.value, TooManyRequestsError)
        usage = me.get_usage()
        assert (usage.verified, usage.limit, usage.remaining) == (1, 1, 0)


@pytest.mark.anyio
async def test_the_async_client(gate):
    async with AsyncX402Client(gate.url, admin_token=gate.admin_token) as admin:
        tag = uuid.uuid4().hex[:10]
        created = await admin.create_tenant(f"py-async-{tag}@sdk.test", "free")
        assert isinstance(created, CreatedTenant)
        assert (await admin.get_tenant(created.tenant.id)).id == created.tenant.id
        with pytest.raises(NotFoundError):
            await admin.get_tenant("no-such-tenant-" + tag)
        payments = [p async for p in admin.iter_payments(tenant=gate.paid_tenant, page_size=1)]
        assert gate.paid_tx in [p.tx_hash for p in payments]
        assert (await admin.list_routes(tenant=gate.paid_tenant)).routes
        assert (await admin.health()).status == "ok"
        assert (await admin.ready()).is_ready

    async with AsyncX402Client(gate.url, api_key=created.api_key.key) as me:
        key = await me.create_key(scopes=["usage:read"])
        assert key.id in [k.id for k in await me.list_keys()]
        rotated = await me.rotate_key(key.id, grace_seconds=0)
        assert (await me.revoke_key(rotated.new_key.id)).revoked_at is not None
        result = await me.verify_transaction(gate.paid_tx, gate.network, gate.paid_amount, gate.pay_to)
        assert result.is_valid and result.amount == gate.paid_amount
        usage = await me.get_usage()
        assert usage.verified == 1
        chains = await me.get_supported_chains()
        assert chains.tier == "free"
        with pytest.raises(NetworkNotAllowedError):
            await me.verify_transaction(gate.paid_tx, gate.denied_network, "1", gate.pay_to)
        with pytest.raises(BadRequestError):
            await me.create_key(expires_in_seconds=-5)

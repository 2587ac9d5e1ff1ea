"""The clients' own behaviour, against a mock transport: retries (GET only), backoff, error
classes, credentials, context managers."""

from __future__ import annotations

import json

import httpx
import pytest

from x402_gate import (
    ApiError,
    AsyncX402Client,
    BadGatewayError,
    PaymentRequiredError,
    ForbiddenError,
    InvalidRouteError,
    NotFoundError,
    ProtocolError,
    RateLimitedError,
    ServiceUnavailableError,
    TransportError,
    UnavailableError,
    X402Client,
)
from x402_gate.errors import ERROR_CLASSES, error_from_response

USAGE = {
    "tenant": "t",
    "tier": "free",
    "period": "2026-11",
    "verified": 3,
    "limit": 1000,
    "remaining": 997,
    "revenue": [{"route": "/paid/*", "network": "eip155:8453", "asset": "0xA", "payments": 3, "amount": "30000"}],
    "daily": [{"day": "2026-11-02", "payments": 3}],
}


def error(status, code, headers=None):
    return httpx.Response(status, json={"error": code, "message": f"{code} happened"}, headers=headers)


class Script:
    """Answers requests in turn from a list; records them."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.requests = []

    def __call__(self, request):
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def client(script, **kw):
    return X402Client("http://gate.test", transport=httpx.MockTransport(script), backoff=0, **kw)


def test_a_get_is_retried_after_a_503_a_connection_error_and_a_rate_limit():
    script = Script(
        error(503, "unavailable"),
        httpx.ConnectError("refused"),
        error(429, "rate_limited", {"retry-after": "0"}),
        httpx.Response(200, json=USAGE),
    )
    with client(script, api_key="k", max_retries=3) as c:
        usage = c.get_usage()
    assert usage.verified == 3 and usage.revenue[0].amount == "30000"
    assert len(script.requests) == 4


def test_retries_stop_and_the_last_error_is_raised():
    script = Script(error(503, "unavailable"), error(503, "unavailable"), error(503, "unavailable"))
    with client(script, api_key="k", max_retries=2) as c:
        with pytest.raises(UnavailableError) as e:
            c.get_usage()
    assert len(script.requests) == 3
    assert isinstance(e.value, ServiceUnavailableError) and e.value.status == 503

    script = Script(*[httpx.ConnectError("refused")] * 2)
    with client(script, max_retries=1) as c:
        with pytest.raises(TransportError):
            c.health()
    assert len(script.requests) == 2


def test_posts_and_patches_are_never_retried():
    for call in (
        lambda c: c.verify_transaction("0x1", "base", "1", "0x2"),
        lambda c: c.create_key(),
        lambda c: c.update_tenant("t", name="n"),
    ):
        script = Script(error(503, "unavailable"), httpx.Response(200, json={}))
        with client(script, api_key="k", admin_token="a", max_retries=5) as c:
            with pytest.raises(UnavailableError):
                call(c)
        assert len(script.requests) == 1

    script = Script(httpx.ConnectError("refused"))
    with client(script, api_key="k", max_retries=5) as c:
        with pytest.raises(TransportError):
            c.verify_transaction("0x1", "base", "1", "0x2")
    assert len(script.requests) == 1


def test_a_quota_429_is_not_retried():
    script = Script(error(429, "tenant_quota_exceeded"), httpx.Response(200, json=USAGE))
    with client(script, api_key="k") as c:
        with pytest.raises(ApiError) as e:
            c.get_usage()
    assert e.value.code == "tenant_quota_exceeded" and len(script.requests) == 1


def test_rate_limited_carries_retry_after():
    script = Script(*[error(429, "rate_limited", {"retry-after": "7"})])
    with client(script, api_key="k", max_retries=0) as c:
        with pytest.raises(RateLimitedError) as e:
            c.get_usage()
    assert e.value.retry_after == 7.0


def test_each_code_raises_its_class_and_unknown_ones_their_status_class():
    for code, cls in ERROR_CLASSES.items():
        e = error_from_response(cls.status, {"error": code, "message": "m"}, {"x-request-id": "r1"})
        assert type(e) is cls and (e.status, e.code, e.message, e.request_id) == (cls.status, code, "m", "r1")
    e = error_from_response(403, {"error": "brand_new_reason", "message": "m"}, {})
    assert type(e) is ForbiddenError and e.code == "brand_new_reason"
    e = error_from_response(418, {"error": "teapot", "message": "m"}, {})
    assert type(e) is ApiError and e.status == 418
    e = error_from_response(502, "<html>bad gateway</html>", {})
    assert type(e) is BadGatewayError and e.code is None and "bad gateway" in e.message
    # A known code under an unexpected status is classed by its status.
    e = error_from_response(404, {"error": "rate_limited", "message": "m"}, {})
    assert type(e) is NotFoundError


def test_each_operation_sends_its_credential():
    script = Script(*[httpx.Response(200, json=v) for v in ([], [], USAGE, {"payments": [], "next_before": None}, {"payments": [], "next_before": None}, {"status": "ok"})])
    with client(script, api_key="x402_live_k", admin_token="adm") as c:
        c.list_tenants()
        c.list_keys()
        c.get_usage()
        c.list_payments(tenant="t", limit=5)
    with client(script, api_key="x402_live_k") as c:
        c.list_payments()
    with client(script, api_key="x402_live_k", admin_token="adm") as c:
        c.health()
    admin, own, usage, pay_admin, pay_key, health = script.requests
    assert admin.headers["x-admin-key"] == "adm" and "authorization" not in admin.headers
    assert own.headers["authorization"] == "Bearer x402_live_k" and "x-admin-key" not in own.headers
    # The operator's credential first where either will do (usage, payments).
    assert usage.headers["x-admin-key"] == "adm" and "authorization" not in usage.headers
    assert pay_admin.headers["x-admin-key"] == "adm"
    assert dict(pay_admin.url.params) == {"tenant": "t", "limit": "5"}
    assert pay_key.headers["authorization"] == "Bearer x402_live_k"
    assert "authorization" not in health.headers and "x-admin-key" not in health.headers


def test_bodies_leave_out_unset_fields_and_paths_are_escaped():
    script = Script(error(404, "not_found"), error(404, "not_found"))
    with client(script, admin_token="a") as c:
        with pytest.raises(NotFoundError):
            c.update_tenant("a/b c", tier="pro")
        with pytest.raises(NotFoundError):
            c.verify_payment({"x": 1}, {"y": 2})
    patch, verify = script.requests
    assert patch.method == "PATCH" and patch.url.raw_path == b"/api/v1/x402/admin/tenants/a%2Fb%20c"
    assert json.loads(patch.content) == {"tier": "pro"}
    assert json.loads(verify.content) == {"paymentPayload": {"x": 1}, "paymentRequirements": {"y": 2}}


def test_an_answer_that_is_not_the_model_is_a_protocol_error():
    script = Script(httpx.Response(200, json={"tenant": "t"}), httpx.Response(200, json={**USAGE, "verified": "3"}))
    with client(script, api_key="k") as c:
        with pytest.raises(ProtocolError, match="has no `tier`"):
            c.get_usage()
        with pytest.raises(ProtocolError, match="verified"):
            c.get_usage()


def test_ready_returns_not_ready_instead_of_raising():
    body = {"status": "not_ready", "reasons": ["store: down"], "warnings": [], "store": {"ok": False, "error": "down"}, "networks": []}
    script = Script(httpx.Response(503, json=body))
    with client(script, max_retries=3) as c:
        r = c.ready()
    assert (r.status, r.is_ready, r.store.ok) == ("not_ready", False, False)
    assert len(script.requests) == 1


def test_a_refused_reload_is_returned_and_a_503_error_raised():
    report = {
        "result": "invalid",
        "file": "/etc/x402-gate/production.toml",
        "applied": [],
        "restart_required": [{"path": "server.threads", "reason": "bound at start"}],
        "errors": [{"path": "routes[0].price", "message": "not a price"}],
    }
    script = Script(httpx.Response(422, json=report), error(503, "unavailable"))
    with client(script, admin_token="a") as c:
        r = c.reload_config()
        assert (r.result, bool(r), r.errors[0].path, r.restart_required[0].path) == (
            "invalid",
            False,
            "routes[0].price",
            "server.threads",
        )
        with pytest.raises(UnavailableError):
            c.reload_config()
    assert script.requests[0].headers["x-admin-key"] == "a"


def test_a_204_returns_none_and_an_invalid_route_carries_its_fields():
    body = {"error": "invalid_route", "message": "price: bad", "fields": [{"field": "price", "message": "bad"}]}
    script = Script(httpx.Response(204), httpx.Response(400, json=body))
    with client(script, api_key="k") as c:
        assert c.delete_route("r_1") is None
        with pytest.raises(InvalidRouteError) as e:
            c.create_route({"price": "x"})
    assert [(f.field, f.message) for f in e.value.fields] == [("price", "bad")]
    assert script.requests[0].method == "DELETE"
    assert json.loads(script.requests[1].content) == {"price": "x"}


def test_a_plan_upgrade_answers_402_with_its_challenge_then_takes_the_payment():
    import base64

    challenge = {"x402Version": 2, "error": "Payment required", "accepts": [{"scheme": "exact", "amount": "5000000"}]}
    header = base64.b64encode(json.dumps(challenge).encode()).decode()
    upgraded = {"tenant": "t", "tier": "pro", "paid_until": 1, "transaction": "0xab", "network": "eip155:8453", "payer": "0x1"}
    script = Script(httpx.Response(402, json={}, headers={"payment-required": header}), httpx.Response(200, json=upgraded))
    with client(script, api_key="k") as c:
        with pytest.raises(PaymentRequiredError) as e:
            c.upgrade_plan("pro")
        assert e.value.status == 402 and e.value.accepts[0]["amount"] == "5000000"
        assert e.value.message == "Payment required"
        done = c.upgrade_plan("pro", payment_signature="c2lnbmVk")
    assert (done.tier, done.transaction) == ("pro", "0xab")
    first, second = script.requests
    assert "payment-signature" not in first.headers
    assert second.headers["payment-signature"] == "c2lnbmVk"
    assert json.loads(second.content) == {"tier": "pro"}


def test_the_context_managers_close_their_connections():
    with client(Script()) as c:
        pass
    assert c._http.is_closed


@pytest.mark.anyio
async def test_the_async_client_retries_gets_only():
    script = Script(error(503, "unavailable"), httpx.Response(200, json=USAGE), error(503, "unavailable"))
    async with AsyncX402Client("http://gate.test", api_key="k", backoff=0, transport=httpx.MockTransport(script)) as c:
        assert (await c.get_usage()).tier == "free"
        with pytest.raises(UnavailableError):
            await c.create_key()
    assert len(script.requests) == 3
    assert c._http.is_closed

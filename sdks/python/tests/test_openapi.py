"""The SDK against the OpenAPI document the gateway serves: a drift fails here."""

from __future__ import annotations

import copy

import pytest

from openapi_check import problems
from x402_gate import X402Client


@pytest.fixture(scope="module")
def served(gate):
    with X402Client(gate.url) as anyone:
        return anyone.openapi()


def test_the_sdk_matches_the_served_openapi_document(served):
    found = problems(served)
    assert not found, "the SDK and the served OpenAPI document disagree:\n" + "\n".join(found)


def test_the_check_catches_drift(served):
    """Each kind of change the gateway could make without the SDK following is caught."""

    def caught(mutate, expected):
        doc = copy.deepcopy(served)
        mutate(doc)
        found = problems(doc)
        assert any(expected in p for p in found), (expected, found)

    schemas = lambda d: d["components"]["schemas"]  # noqa: E731

    def new_required_field(d):
        s = schemas(d)["TenantView"]
        s["properties"]["plan"] = {"type": "string"}
        s["required"].append("plan")

    caught(new_required_field, "TenantView.plan")

    def field_now_nullable(d):
        schemas(d)["UsageView"]["properties"]["verified"]["type"] = ["integer", "null"]

    caught(field_now_nullable, "UsageView.verified: may be null")

    def field_retyped(d):
        schemas(d)["PaymentView"]["properties"]["amount"] = {"type": "integer"}

    caught(field_retyped, "PaymentView.amount: integer")

    def new_operation(d):
        d["paths"]["/api/v1/x402/webhooks"] = {"get": {"operationId": "list_webhooks", "responses": {}}}

    caught(new_operation, "list_webhooks")

    def new_body_field(d):
        schemas(d)["CreateKeyRequest"]["properties"]["note"] = {"type": ["string", "null"]}

    caught(new_body_field, "no parameter for `note`")

    def moved(d):
        d["paths"]["/api/v1/x402/usage-v2"] = d["paths"].pop("/api/v1/x402/usage")

    caught(moved, "/api/v1/x402/usage-v2")

    def new_error_code(d):
        error = schemas(d)["ErrorBody"]["properties"]["error"]
        error["enum"].append("payment_required")
        error["x-error-statuses"]["payment_required"] = 402

    caught(new_error_code, "`payment_required`: no exception class")

    def verify_result_renamed(d):
        props = schemas(d)["VerifyResult"]["properties"]
        props["valid"] = props.pop("isValid")
        schemas(d)["VerifyResult"]["required"] = ["valid", "cached"]

    caught(verify_result_renamed, "VerifyResult.valid")

"""Fixtures. The tests against the gateway read where it is from ``X402_GATE_*`` variables, set by
the Rust test ``tests/sdks.rs`` (which starts a real chain and gateway and pays one request
first); without ``X402_GATE_URL`` they are skipped and only the offline tests run."""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator

import pytest

from x402_gate import CreatedTenant, X402Client


@dataclass(frozen=True)
class Gate:
    url: str
    admin_token: str
    #: The config tenant whose route was paid, and that payment's settlement.
    paid_tenant: str
    paid_tx: str
    paid_amount: str
    pay_to: str
    payer: str
    network: str
    #: A configured network the free tier does not allow.
    denied_network: str
    #: A signed payment nobody has verified yet: {"paymentPayload", "paymentRequirements"}.
    payment: Dict[str, Any]
    #: An origin routes may point at (allowed by the gateway's [routes_api] upstream_allow).
    upstream: str


@pytest.fixture(scope="session")
def gate() -> Gate:
    env = os.environ
    if not env.get("X402_GATE_URL"):
        pytest.skip("X402_GATE_URL is not set: run through `cargo test --test sdks`")
    return Gate(
        url=env["X402_GATE_URL"],
        admin_token=env["X402_GATE_ADMIN_TOKEN"],
        paid_tenant=env["X402_GATE_PAID_TENANT"],
        paid_tx=env["X402_GATE_PAID_TX"],
        paid_amount=env["X402_GATE_PAID_AMOUNT"],
        pay_to=env["X402_GATE_PAY_TO"],
        payer=env["X402_GATE_PAYER"],
        network=env["X402_GATE_NETWORK"],
        denied_network=env["X402_GATE_DENIED_NETWORK"],
        payment=json.loads(env["X402_GATE_PAYMENT"]),
        upstream=env["X402_GATE_UPSTREAM"],
    )


@pytest.fixture
def admin(gate: Gate) -> Iterator[X402Client]:
    with X402Client(gate.url, admin_token=gate.admin_token) as client:
        yield client


@pytest.fixture
def new_tenant(admin: X402Client) -> Callable[..., CreatedTenant]:
    """Creates a tenant with a fresh email (and id), through the API."""

    def create(tier: str = "free", **kwargs: Any) -> CreatedTenant:
        tag = uuid.uuid4().hex[:10]
        return admin.create_tenant(f"py-{tag}@sdk.test", tier, name=f"Py {tag}", **kwargs)

    return create


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"

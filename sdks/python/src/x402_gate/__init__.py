"""Python client of the x402-gate management API.

Two clients with the same methods: :class:`X402Client` (blocking) and
:class:`AsyncX402Client` (asyncio), both over ``httpx``. Answers are dataclasses
(:mod:`x402_gate.models`), errors are exceptions by the API's error code
(:mod:`x402_gate.errors`).

    from x402_gate import X402Client

    with X402Client("http://127.0.0.1:8403", admin_token="…") as admin:
        created = admin.create_tenant("dev@newco.test", "starter", name="NewCo")
        print(created.api_key.key)  # shown this once
"""

from ._version import __version__
from .client import DEFAULT_BASE_URL, AsyncX402Client, X402Client
from .errors import *  # noqa: F401,F403
from .errors import __all__ as _errors
from .models import *  # noqa: F401,F403
from .models import __all__ as _models

__all__ = ["__version__", "DEFAULT_BASE_URL", "X402Client", "AsyncX402Client", *_errors, *_models]

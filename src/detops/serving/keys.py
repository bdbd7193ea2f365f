"""The API key: DETOPS_SERVE_API_KEY, read from the environment (a credential is never a param). Every route but
/health needs it when it is set; clients send it as `X-API-Key: KEY` or `Authorization: Bearer KEY`."""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping

API_KEY_ENV = "DETOPS_SERVE_API_KEY"
OPEN_PATHS = frozenset({"/health"})


def api_key() -> str | None:
    return os.environ.get(API_KEY_ENV) or None


def key_problem(headers: Mapping[str, str]) -> str | None:
    """Why a request with these headers is not authorised, or None when it is (or no key is set)."""
    expected = api_key()
    if expected is None:
        return None
    sent = headers.get("x-api-key")
    if sent is None:
        auth = headers.get("authorization", "")
        scheme, _, value = auth.partition(" ")
        sent = value.strip() if scheme.lower() == "bearer" else None
    if sent is None:
        return "this server needs an API key: send it as X-API-Key or Authorization: Bearer"
    if not hmac.compare_digest(sent.encode(), expected.encode()):
        return "wrong API key"
    return None

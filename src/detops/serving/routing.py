"""Which model answers a request: a hash of its request id against `serve.canary_share`, so a client that sends
the same `X-Request-Id` always meets the same model, and a second, independent hash against `serve.shadow_share`.

A hash rather than a random draw: a retried request lands where it landed before, and a report of a bad answer
(with its request id) names the model that gave it.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass

REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def request_id(sent: str | None) -> tuple[str, str | None]:
    """The client's request id, or a new one; and why the sent one is refused (too long, empty, or characters that
    do not belong in a header), else None."""
    if sent is not None and _REQUEST_ID.match(sent):
        return sent, None
    if sent is None:
        return uuid.uuid4().hex, None
    return uuid.uuid4().hex, f"X-Request-Id {sent[:40]!r} is not 1-128 characters of letters, digits and ._:-"


def share_point(request_id: str, salt: str) -> float:
    """A point in [0, 1), uniform over ids and fixed for one id: the first 8 bytes of sha256(salt:id)."""
    digest = hashlib.sha256(f"{salt}:{request_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


@dataclass(frozen=True)
class Assignment:
    canary: bool  # answered by the challenger
    shadow: bool  # answered by the champion, then run on the challenger too


def assign(request_id: str, canary_share: float, shadow_share: float) -> Assignment:
    """Canary when the id's canary point falls below the share; shadow (of the others) by an independent point."""
    canary = share_point(request_id, "canary") < canary_share
    shadow = not canary and share_point(request_id, "shadow") < shadow_share
    return Assignment(canary, shadow)

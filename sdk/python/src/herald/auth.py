"""Helpers for the app's own backend (PROTOCOL.md §9): signing a ``private-`` channel join
and verifying a webhook's signature. Both use the app secret (``herald secret show``), whose
text is the HMAC key as UTF-8 bytes. Neither logs or keeps the secret."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from .errors import WebhookSignatureError

SIGNATURE_HEADER = "X-Herald-Signature"


def _key(secret: str | bytes) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def sign_channel(secret: str | bytes, conn_id: str, channel: str) -> str:
    """The ``auth`` of ``channel.join`` for a ``private-`` channel:
    ``lowercase hex(HMAC-SHA256(app_secret, conn_id ‖ ":" ‖ channel_name))``.

    The backend decides whether the user may join, then hands this to the client, which
    joins with ``client.join(channel, auth=…)`` on the connection ``conn_id`` names."""
    message = f"{conn_id}:{channel}".encode()
    return hmac.new(_key(secret), message, hashlib.sha256).hexdigest()


def webhook_signature(secret: str | bytes, body: bytes) -> str:
    """The ``X-Herald-Signature`` value of ``body``: ``sha256=<hex HMAC-SHA256>``."""
    return "sha256=" + hmac.new(_key(secret), body, hashlib.sha256).hexdigest()


def verify_webhook(secret: str | bytes, body: bytes, signature: str | None) -> bool:
    """Whether ``signature`` (the ``X-Herald-Signature`` header) signs ``body`` (the raw
    request bytes, before any JSON parsing) with the app secret. Constant-time."""
    if not signature:
        return False
    expected = webhook_signature(secret, body)
    return hmac.compare_digest(expected.encode(), signature.strip().lower().encode())


def parse_webhook(secret: str | bytes, body: bytes, signature: str | None) -> dict[str, Any]:
    """The webhook's JSON ``{id, app, event, channel, seq?, ts, data}`` once its signature
    verifies; :class:`~herald.errors.WebhookSignatureError` otherwise (answer 401 then).
    Retries carry the same ``id``: deduplicate on it."""
    if not verify_webhook(secret, body, signature):
        raise WebhookSignatureError("missing or wrong X-Herald-Signature")
    try:
        payload = json.loads(body)
    except ValueError as e:
        raise WebhookSignatureError("signed body is not JSON") from e
    if not isinstance(payload, dict):
        raise WebhookSignatureError("signed body is not a JSON object")
    return payload

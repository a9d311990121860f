"""Backend helpers: the private-channel signature and webhook verification (PROTOCOL.md §9),
against digests computed independently with `openssl dgst -sha256 -hmac`."""

from __future__ import annotations

import pytest

import herald

SECRET = "s3cret-app"
# printf '%s' 'conn-1:private-ops' | openssl dgst -sha256 -hmac 's3cret-app'
CHANNEL_SIG = "f9395d36d3204d2ce40b446d8388461b3d66e384f2d7de7308b270d398fe625d"
BODY = b'{"id":"w1","event":"message"}'
# printf '%s' '{"id":"w1","event":"message"}' | openssl dgst -sha256 -hmac 's3cret-app'
BODY_SIG = "2d060a3df10e9e0d959babd523bd65321b41d5b7a0297fe6d6ee304acf9c69d8"


def test_sign_channel_is_hmac_of_conn_id_colon_channel() -> None:
    assert herald.sign_channel(SECRET, "conn-1", "private-ops") == CHANNEL_SIG
    assert herald.sign_channel(SECRET.encode(), "conn-1", "private-ops") == CHANNEL_SIG
    assert herald.sign_channel(SECRET, "conn-2", "private-ops") != CHANNEL_SIG
    assert herald.sign_channel(SECRET, "conn-1", "private-dev") != CHANNEL_SIG


def test_webhook_signature_verifies_and_refuses() -> None:
    header = f"sha256={BODY_SIG}"
    assert herald.webhook_signature(SECRET, BODY) == header
    assert herald.verify_webhook(SECRET, BODY, header)
    assert herald.verify_webhook(SECRET, BODY, header.upper().replace("SHA256=", "sha256="))
    assert not herald.verify_webhook(SECRET, BODY + b" ", header)
    assert not herald.verify_webhook("other", BODY, header)
    assert not herald.verify_webhook(SECRET, BODY, BODY_SIG)  # without the sha256= prefix
    assert not herald.verify_webhook(SECRET, BODY, None)
    assert not herald.verify_webhook(SECRET, BODY, "")


def test_parse_webhook_returns_the_payload_only_when_signed() -> None:
    assert herald.parse_webhook(SECRET, BODY, f"sha256={BODY_SIG}") == {
        "id": "w1",
        "event": "message",
    }
    with pytest.raises(herald.WebhookSignatureError):
        herald.parse_webhook(SECRET, BODY, "sha256=" + "0" * 64)

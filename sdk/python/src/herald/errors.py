"""The exceptions of the SDK.

A request the server refused raises a :class:`ServerError` subclass named after the protocol's
error code (PROTOCOL.md §1): ``bad_request`` is :class:`BadRequestError`, ``channel_not_found``
is :class:`ChannelNotFoundError`, and so on; ``err.code`` holds the code as sent. Everything
else is about the connection or the data received, not about the request.
"""

from __future__ import annotations

from typing import Any


class HeraldError(Exception):
    """Base class of every error this SDK raises."""


class ServerError(HeraldError):
    """The server answered ``{"error": {"code", "message"}}``.

    Subclasses exist for every code of PROTOCOL.md §1; a code this SDK does not know yet is
    raised as a plain ``ServerError`` with that ``code``.
    """

    code: str = "internal"

    def __init__(self, message: str, *, code: str | None = None, retry_after_ms: int | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.retry_after_ms = retry_after_ms

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class BadRequestError(ServerError):
    code = "bad_request"


class InvalidNameError(ServerError):
    code = "invalid_name"


class UnauthorizedError(ServerError):
    """The token was refused: missing, forged or expired. The client does not reconnect."""

    code = "unauthorized"


class ForbiddenError(ServerError):
    code = "forbidden"


class NotAuthorError(ServerError):
    code = "not_author"


class ChannelNotFoundError(ServerError):
    code = "channel_not_found"


class NotFoundError(ServerError):
    code = "not_found"


class NameTakenError(ServerError):
    code = "name_taken"


class StaleEpochError(ServerError):
    code = "stale_epoch"


class PayloadTooLargeError(ServerError):
    code = "payload_too_large"


class RateLimitedError(ServerError):
    """Over a rate limit; ``retry_after_ms`` says when to try again, when the server said."""

    code = "rate_limited"


class InternalError(ServerError):
    code = "internal"


_BY_CODE: dict[str, type[ServerError]] = {
    cls.code: cls
    for cls in (
        BadRequestError,
        InvalidNameError,
        UnauthorizedError,
        ForbiddenError,
        NotAuthorError,
        ChannelNotFoundError,
        NotFoundError,
        NameTakenError,
        StaleEpochError,
        PayloadTooLargeError,
        RateLimitedError,
        InternalError,
    )
}

_BY_STATUS: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    409: "name_taken",
    413: "payload_too_large",
    429: "rate_limited",
}


def server_error(detail: Any, *, status: int | None = None) -> ServerError:
    """The exception for an error object ``{"code", "message", "retry_after_ms"?}``.

    ``detail`` comes from the network, so anything unreadable becomes a generic error named
    after the HTTP ``status`` when there is one, never a crash.
    """
    if not isinstance(detail, dict):
        code = _BY_STATUS.get(status or 500, "internal")
        return _BY_CODE[code](f"http status {status}" if status else "unreadable error reply")
    raw_code = detail.get("code")
    raw_message = detail.get("message")
    retry = detail.get("retry_after_ms")
    code = raw_code if isinstance(raw_code, str) else _BY_STATUS.get(status or 500, "internal")
    message = raw_message if isinstance(raw_message, str) else ""
    retry_after_ms = retry if isinstance(retry, int) and not isinstance(retry, bool) else None
    cls = _BY_CODE.get(code, ServerError)
    return cls(message, code=code, retry_after_ms=retry_after_ms)


class ConnectionLostError(HeraldError):
    """The connection dropped while the request was in flight: it may or may not have been
    applied. Only ``message.send`` with a ``client_id`` (every ``Channel.send``) is resent by
    itself, because the server applies a repeated ``client_id`` once."""


class ClosedError(HeraldError):
    """The client was closed (or gave up reconnecting) and takes no more requests."""


class RequestTimeoutError(HeraldError, TimeoutError):
    """No reply within the configured request timeout. A request still queued while the
    client reconnects is then never sent."""


class ConnectError(HeraldError):
    """The first connection attempt failed (network, TLS, or the server refused the upgrade)."""


class TransportError(HeraldError):
    """A REST call failed below HTTP: connection refused, reset, timed out."""


class ProtocolError(HeraldError):
    """The server sent something this SDK cannot read."""


class IntegrityError(HeraldError):
    """Downloaded bytes do not match their content address (a blob's BLAKE3)."""


class WebhookSignatureError(HeraldError):
    """A webhook body whose ``X-Herald-Signature`` is missing or wrong."""


class ChainError(HeraldError):
    """A log entry failed hash-chain verification (PROTOCOL.md §5); it is never delivered.

    ``reason`` is one of ``malformed``, ``content_mismatch``, ``hash_mismatch``,
    ``broken_link``, ``gap``, ``bad_genesis``.
    """

    def __init__(self, reason: str, channel: str, seq: int, detail: str):
        super().__init__(f"channel {channel}: entry {seq}: {detail}")
        self.reason = reason
        self.channel = channel
        self.seq = seq

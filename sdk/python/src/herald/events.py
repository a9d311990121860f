"""What a client hands its user: typed events (dataclasses), one class per server push
(PROTOCOL.md §4, docs/protocol.md §B) plus the client's own (connected, disconnected, chain
error, lagged).

Log events (those with ``meta``) have been verified against the channel's hash chain and
are delivered exactly once, in ``seq`` order per channel, across reconnects. They are whole
whichever form the server sent: what a compact event leaves out (``hash``, ``content_hash``
and its message's ``seq``, ``author``, ``ts``; docs/protocol.md §B) is computed or taken from
the entry before they are typed (:func:`herald.chain.completed_event`). A push this SDK
does not know yet (a newer server) arrives as :class:`UnknownEvent` with its raw JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .chain import KINDS
from .errors import ChainError, ProtocolError, ServerError
from .models import ConnectInfo, Message, _b, _i, _obj, _os, _s


@dataclass(frozen=True)
class Event:
    """Base class of everything an event stream yields."""


@dataclass(frozen=True)
class EntryMeta:
    """The chain fields of an event that is a log entry."""

    seq: int
    hash: str
    prev_hash: str
    ts: str
    author: str
    content_hash: str
    salt: str | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> EntryMeta:
        return cls(
            seq=_i(d, "seq"),
            hash=_s(d, "hash"),
            prev_hash=_s(d, "prev_hash"),
            ts=_s(d, "ts"),
            author=_s(d, "author"),
            content_hash=_s(d, "content_hash", ""),
            salt=_os(d, "salt"),
        )


# -- the client's own events ------------------------------------------------------------


@dataclass(frozen=True)
class Connected(Event):
    """A ``connect`` succeeded: the first one, and every reconnect after it."""

    info: ConnectInfo


@dataclass(frozen=True)
class Disconnected(Event):
    """The connection dropped; the client reconnects unless it was closed or refused."""

    reason: str


@dataclass(frozen=True)
class ChainFailed(Event):
    """An entry failed verification and was not delivered."""

    error: ChainError


@dataclass(frozen=True)
class ServerErrorReply(Event):
    """An error reply that answers no request (e.g. to a frame the server could not parse)."""

    error: ServerError


@dataclass(frozen=True)
class Lagged(Event):
    """The last item of an event stream whose reader fell ``capacity`` events behind: the
    stream ends rather than grow without bound or drop events silently. Open a new stream and
    page what was missed with ``Channel.history`` or ``Channel.log``."""

    capacity: int


# -- server pushes ----------------------------------------------------------------------


@dataclass(frozen=True)
class ServerEvent(Event):
    """A push from the server. ``raw`` is the JSON object as received; for a log event, in
    its full form (a compact event's missing fields filled in, as in the typed fields)."""

    raw: dict[str, Any] = field(compare=False, repr=False)


@dataclass(frozen=True)
class LogEvent(ServerEvent):
    """A server push that is a log entry of ``channel``."""

    channel: str
    meta: EntryMeta

    @property
    def seq(self) -> int:
        return self.meta.seq


@dataclass(frozen=True)
class MessageEvent(LogEvent):
    message: Message


@dataclass(frozen=True)
class MessageEdited(LogEvent):
    message_id: str
    content: str
    edited_at: str
    epoch: int | None = None


@dataclass(frozen=True)
class MessageDeleted(LogEvent):
    message_id: str


@dataclass(frozen=True)
class ReactionAdded(LogEvent):
    """The ``reaction`` event."""

    reaction_id: str
    message_id: str
    emoji: str


@dataclass(frozen=True)
class ReactionDeleted(LogEvent):
    reaction_id: str
    message_id: str


@dataclass(frozen=True)
class MemberJoined(LogEvent):
    user: str
    by: str
    name: str | None = None


@dataclass(frozen=True)
class MemberLeft(LogEvent):
    user: str
    by: str
    name: str | None = None


@dataclass(frozen=True)
class ChannelCreated(LogEvent):
    name: str | None = None
    title: str | None = None


@dataclass(frozen=True)
class KeyRotated(LogEvent):
    """A new key epoch of an encrypted channel (§7)."""

    epoch: int | None = None
    commit_hash: str = ""


@dataclass(frozen=True)
class ChannelDeleted(ServerEvent):
    channel: str
    name: str | None = None
    title: str | None = None


@dataclass(frozen=True)
class MessageRead(ServerEvent):
    channel: str
    user: str
    message_id: str


@dataclass(frozen=True)
class Typing(ServerEvent):
    channel: str
    user: str
    is_typing: bool


@dataclass(frozen=True)
class Ephemeral(ServerEvent):
    channel: str
    sender: str
    subject: str
    data: Any = None


@dataclass(frozen=True)
class Publication(ServerEvent):
    """A ``publication`` on a subscribed subject; ``sender`` is the publisher's user id."""

    subject: str
    sender: str
    data: Any = None


@dataclass(frozen=True)
class ResumeTruncated(ServerEvent):
    """The server replayed only the newest entries after a resume; entries before
    ``from_seq`` must be paged with ``Channel.history`` or ``Channel.log``."""

    channel: str
    from_seq: int


@dataclass(frozen=True)
class UnknownEvent(ServerEvent):
    """A push this SDK does not know (yet)."""

    name: str


def _opt_int(d: dict[str, Any], key: str) -> int | None:
    v = d.get(key)
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def parse_event(v: Any) -> ServerEvent:
    """The typed event of a raw push, a log event in its full form (a compact one is
    completed by :func:`herald.chain.completed_event` once verified). Raises
    :class:`ProtocolError` if a known event lacks a field or has one of the wrong type."""
    d = _obj(v, "event")
    name = _s(d, "event")
    if name == "publication":
        return Publication(d, _s(d, "subject"), _s(d, "from"), d.get("data"))
    if name == "message_read":
        return MessageRead(d, _s(d, "channel"), _s(d, "user"), _s(d, "message_id"))
    if name == "typing":
        return Typing(d, _s(d, "channel"), _s(d, "user"), _b(d, "is_typing", True))
    if name == "ephemeral":
        return Ephemeral(d, _s(d, "channel"), _s(d, "from"), _s(d, "subject"), d.get("data"))
    if name == "channel_deleted":
        return ChannelDeleted(d, _s(d, "channel"), _os(d, "name"), _os(d, "title"))
    if name == "resume_truncated":
        return ResumeTruncated(d, _s(d, "channel"), _i(d, "from_seq"))
    if "seq" not in d:
        if name in KINDS:
            raise ProtocolError(f"{name} event without seq")
        return UnknownEvent(d, name)
    channel = _s(d, "channel")
    meta = EntryMeta.from_json(d)
    if name == "message":
        return MessageEvent(d, channel, meta, Message.from_json(d.get("message")))
    if name == "message_edited":
        return MessageEdited(
            d,
            channel,
            meta,
            _s(d, "message_id"),
            _s(d, "content"),
            _s(d, "edited_at", ""),
            _opt_int(d, "epoch"),
        )
    if name == "message_deleted":
        return MessageDeleted(d, channel, meta, _s(d, "message_id"))
    if name == "reaction":
        return ReactionAdded(
            d, channel, meta, _s(d, "reaction_id"), _s(d, "message_id"), _s(d, "emoji")
        )
    if name == "reaction_deleted":
        return ReactionDeleted(d, channel, meta, _s(d, "reaction_id"), _s(d, "message_id", ""))
    if name in ("member_joined", "member_left"):
        cls = MemberJoined if name == "member_joined" else MemberLeft
        return cls(d, channel, meta, _s(d, "user"), _s(d, "by", meta.author), _os(d, "name"))
    if name == "channel_created":
        return ChannelCreated(d, channel, meta, _os(d, "name"), _os(d, "title"))
    if name == "key_rotated":
        commit = d.get("commit_hash", d.get("content", ""))
        return KeyRotated(
            d, channel, meta, _opt_int(d, "epoch"), commit if isinstance(commit, str) else ""
        )
    return UnknownEvent(d, name)


__all__ = [
    "ChainFailed",
    "ChannelCreated",
    "ChannelDeleted",
    "Connected",
    "Disconnected",
    "EntryMeta",
    "Ephemeral",
    "Event",
    "KeyRotated",
    "Lagged",
    "LogEvent",
    "MemberJoined",
    "MemberLeft",
    "MessageDeleted",
    "MessageEdited",
    "MessageEvent",
    "MessageRead",
    "ProtocolError",
    "Publication",
    "ReactionAdded",
    "ReactionDeleted",
    "ResumeTruncated",
    "ServerErrorReply",
    "ServerEvent",
    "Typing",
    "UnknownEvent",
    "parse_event",
]

"""Data as it travels on the wire (PROTOCOL.md §4 to §6, docs/protocol.md §C), as dataclasses.

Every ``from_json`` reads what the server sent leniently: a missing optional field takes
its default, a field of the wrong type raises :class:`~herald.errors.ProtocolError`, and
fields this SDK does not know are ignored (servers may add fields).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import ProtocolError

JSON = Any


def _obj(v: Any, what: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ProtocolError(f"expected an object for {what}, got {type(v).__name__}")
    return v


def _s(d: dict[str, Any], key: str, default: str | None = None) -> str:
    v = d.get(key, default)
    if not isinstance(v, str):
        raise ProtocolError(f"field {key!r} should be a string, got {v!r}")
    return v


def _os(d: dict[str, Any], key: str) -> str | None:
    v = d.get(key)
    if v is None:
        return None
    if not isinstance(v, str):
        raise ProtocolError(f"field {key!r} should be a string or null, got {v!r}")
    return v


def _i(d: dict[str, Any], key: str, default: int | None = None) -> int:
    v = d.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool):
        raise ProtocolError(f"field {key!r} should be an integer, got {v!r}")
    return v


def _b(d: dict[str, Any], key: str, default: bool = False) -> bool:
    v = d.get(key, default)
    if not isinstance(v, bool):
        raise ProtocolError(f"field {key!r} should be a boolean, got {v!r}")
    return v


def _list(d: dict[str, Any], key: str) -> list[Any]:
    v = d.get(key, [])
    if not isinstance(v, list):
        raise ProtocolError(f"field {key!r} should be a list, got {v!r}")
    return v


@dataclass(frozen=True)
class User:
    """The authenticated user of a connection."""

    id: str
    name: str | None = None
    kind: str = "human"

    @classmethod
    def from_json(cls, v: Any) -> User:
        d = _obj(v, "user")
        return cls(id=_s(d, "id"), name=_os(d, "name"), kind=_s(d, "kind", "human"))


@dataclass(frozen=True)
class ConnectInfo:
    """The ``ok`` of ``connect``."""

    conn_id: str
    user: User

    @classmethod
    def from_json(cls, v: Any) -> ConnectInfo:
        d = _obj(v, "connect reply")
        return cls(conn_id=_s(d, "conn_id"), user=User.from_json(d.get("user")))


@dataclass(frozen=True)
class ChannelData:
    """A channel as the server describes it."""

    id: str
    name: str | None
    title: str | None
    encrypted: bool
    policy: str
    created_by: str
    created_at: str
    last_seq: int

    @classmethod
    def from_json(cls, v: Any) -> ChannelData:
        d = _obj(v, "channel")
        return cls(
            id=_s(d, "id"),
            name=_os(d, "name"),
            title=_os(d, "title"),
            encrypted=_b(d, "encrypted"),
            policy=_s(d, "policy", "open"),
            created_by=_s(d, "created_by", ""),
            created_at=_s(d, "created_at", ""),
            last_seq=_i(d, "last_seq", 0),
        )


@dataclass(frozen=True)
class ChannelSummary:
    """A line of ``channel.list``."""

    id: str
    name: str | None
    title: str | None
    unread: int
    last_seq: int

    @classmethod
    def from_json(cls, v: Any) -> ChannelSummary:
        d = _obj(v, "channel summary")
        return cls(
            id=_s(d, "id"),
            name=_os(d, "name"),
            title=_os(d, "title"),
            unread=_i(d, "unread", 0),
            last_seq=_i(d, "last_seq", 0),
        )


@dataclass(frozen=True)
class DirectoryEntry:
    """A line of ``channel.directory``."""

    name: str
    id: str

    @classmethod
    def from_json(cls, v: Any) -> DirectoryEntry:
        d = _obj(v, "directory entry")
        return cls(name=_s(d, "name"), id=_s(d, "id"))


@dataclass(frozen=True)
class Member:
    """A member as ``GET /v1/channels/{id}`` shows it."""

    user: str
    name: str | None
    kind: str
    last_read: int

    @classmethod
    def from_json(cls, v: Any) -> Member:
        d = _obj(v, "member")
        return cls(
            user=_s(d, "user"),
            name=_os(d, "name"),
            kind=_s(d, "kind", "human"),
            last_read=_i(d, "last_read", 0),
        )


@dataclass(frozen=True)
class ChannelInfo:
    """``GET /v1/channels/{id_or_name}``: the channel and its members."""

    channel: ChannelData
    members: list[Member]

    @classmethod
    def from_json(cls, v: Any) -> ChannelInfo:
        d = _obj(v, "channel info")
        return cls(
            channel=ChannelData.from_json(d.get("channel")),
            members=[Member.from_json(m) for m in _list(d, "members")],
        )


@dataclass(frozen=True)
class ReplySnapshot:
    """The message a reply points at, as it was when read (``content`` None once deleted)."""

    id: str
    author: str
    content: str | None
    edited: bool

    @classmethod
    def from_json(cls, v: Any) -> ReplySnapshot:
        d = _obj(v, "reply_to")
        return cls(
            id=_s(d, "id"),
            author=_s(d, "author", ""),
            content=_os(d, "content"),
            edited=_b(d, "edited"),
        )


@dataclass(frozen=True)
class Reaction:
    """A reaction as history shows it."""

    reaction_id: str
    emoji: str
    user: str

    @classmethod
    def from_json(cls, v: Any) -> Reaction:
        d = _obj(v, "reaction")
        return cls(reaction_id=_s(d, "reaction_id"), emoji=_s(d, "emoji"), user=_s(d, "user"))


@dataclass(frozen=True)
class Message:
    """A message, from history or a ``message`` event. ``reactions`` is None on live events.
    ``epoch`` is set in encrypted channels."""

    id: str
    seq: int
    author: str
    type: str
    content: str
    ts: str
    reply_to: ReplySnapshot | None = None
    client_id: str | None = None
    edited_at: str | None = None
    reactions: list[Reaction] | None = None
    epoch: int | None = None

    @classmethod
    def from_json(cls, v: Any) -> Message:
        d = _obj(v, "message")
        reply = d.get("reply_to")
        reactions = d.get("reactions")
        epoch = d.get("epoch")
        return cls(
            id=_s(d, "id"),
            seq=_i(d, "seq"),
            author=_s(d, "author"),
            type=_s(d, "type", "chat.text"),
            content=_s(d, "content", ""),
            ts=_s(d, "ts", ""),
            reply_to=ReplySnapshot.from_json(reply) if reply is not None else None,
            client_id=_os(d, "client_id"),
            edited_at=_os(d, "edited_at"),
            reactions=[Reaction.from_json(r) for r in _list(d, "reactions")]
            if reactions is not None
            else None,
            epoch=epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None,
        )


@dataclass(frozen=True)
class HistoryPage:
    """A page of ``history``: newest first with ``before`` (or neither), oldest first with
    ``after``."""

    messages: list[Message]
    has_more: bool

    @classmethod
    def from_json(cls, v: Any) -> HistoryPage:
        d = _obj(v, "history page")
        return cls(
            messages=[Message.from_json(m) for m in _list(d, "messages")],
            has_more=_b(d, "has_more"),
        )


@dataclass(frozen=True)
class LogEntry:
    """One raw log entry (§5). ``content`` and ``salt`` are None on a tombstone."""

    seq: int
    kind: str
    author: str
    ref: str
    ts: str
    content_hash: str
    prev_hash: str
    hash: str
    content: str | None = None
    salt: str | None = None

    @classmethod
    def from_json(cls, v: Any) -> LogEntry:
        d = _obj(v, "log entry")
        return cls(
            seq=_i(d, "seq"),
            kind=_s(d, "kind"),
            author=_s(d, "author"),
            ref=_s(d, "ref", ""),
            ts=_s(d, "ts"),
            content_hash=_s(d, "content_hash"),
            prev_hash=_s(d, "prev_hash"),
            hash=_s(d, "hash"),
            content=_os(d, "content"),
            salt=_os(d, "salt"),
        )


@dataclass(frozen=True)
class LogPage:
    """A verified page of ``GET /v1/channels/{id}/log``."""

    entries: list[LogEntry]
    has_more: bool


@dataclass(frozen=True)
class BlobRef:
    """The answer of a blob upload: ``blob_id`` is the lowercase hex BLAKE3 of the bytes."""

    blob_id: str
    size: int

    @classmethod
    def from_json(cls, v: Any) -> BlobRef:
        d = _obj(v, "blob answer")
        return cls(blob_id=_s(d, "blob_id"), size=_i(d, "size"))

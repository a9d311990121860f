"""The channel log's hash chain (PROTOCOL.md §5), recomputed client-side.

::

    content_hash = BLAKE3(salt ‖ content)
    hash         = BLAKE3("herald.v1.entry" ‖ prev_hash ‖ u64be(seq) ‖ lp(kind) ‖ lp(channel_id)
                          ‖ lp(author) ‖ lp(ref) ‖ u64be(ts_ms) ‖ content_hash)
    lp(s)        = u32be(byte length of s) ‖ UTF-8 bytes of s

:class:`ChainVerifier` follows every channel a client sees, entry by entry: the first entry
seen of a channel is its anchor (trusted on first use unless it is entry 1, whose
``prev_hash`` must be zero); every later one must be the next ``seq`` and link to the
previous hash. Entries at or below the head are duplicates (dropped). The same rules as the
Rust SDK (``herald_proto::chain``), so both accept and refuse the same logs.

Log events may come compact (docs/protocol.md §B): without ``hash``, and without
``content_hash`` unless the entry is a tombstone (no ``salt``). :func:`verify_entry` computes
what is missing and checks what is present, so one pass hashes each entry once; the computed
hash is still bound to the log by the link: it becomes the head, and the next entry's
``prev_hash`` must equal it. :func:`completed_event` then gives a compact event the full
form the typed events are read from.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import blake3

from .errors import ChainError

ZERO_HASH = bytes(32)
SALT_LEN = 16

KINDS = frozenset(
    {
        "channel_created",
        "member_joined",
        "member_left",
        "message",
        "message_edited",
        "message_deleted",
        "reaction",
        "reaction_deleted",
        "key_rotated",
    }
)

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def parse_ts_ms(ts: str) -> int | None:
    """Milliseconds since the Unix epoch of an RFC 3339 timestamp (any offset), or None."""
    if not isinstance(ts, str) or len(ts) < 20:
        return None
    text = ts[:-1] + "+00:00" if ts[-1] in "Zz" else ts
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    if dt.tzinfo is None:
        return None
    return (dt - _EPOCH) // timedelta(milliseconds=1)


def content_hash(salt: bytes, content: str) -> bytes:
    """``BLAKE3(salt ‖ content)``."""
    h = blake3.blake3(salt)
    h.update(content.encode("utf-8"))
    digest: bytes = h.digest()
    return digest


def _lp(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack(">I", len(b)) + b


def entry_hash(
    prev_hash: bytes,
    *,
    seq: int,
    kind: str,
    channel_id: str,
    author: str,
    ref: str,
    ts_ms: int,
    content_hash: bytes,
) -> bytes:
    """The entry hash of §5."""
    h = blake3.blake3(b"herald.v1.entry")
    h.update(prev_hash)
    h.update(struct.pack(">Q", seq & 0xFFFF_FFFF_FFFF_FFFF))
    h.update(_lp(kind))
    h.update(_lp(channel_id))
    h.update(_lp(author))
    h.update(_lp(ref))
    h.update(struct.pack(">Q", ts_ms & 0xFFFF_FFFF_FFFF_FFFF))
    h.update(content_hash)
    digest: bytes = h.digest()
    return digest


@dataclass(frozen=True)
class EntryRef:
    """One entry as the verifier reads it. ``content`` and ``salt`` are None on a tombstone
    (a deleted message): the link still verifies through ``content_hash``. ``hash`` and
    ``content_hash`` are None when a compact event leaves them out (computed instead)."""

    channel_id: str
    seq: int
    kind: str
    author: str
    ref: str
    ts_ms: int
    content: str | None
    salt: str | None
    content_hash: str | None
    prev_hash: str
    hash: str | None


@dataclass(frozen=True)
class VerifiedEntry:
    """An entry checked on its own by :func:`verify_entry`: its hashes, computed where the
    entry left them out, equal to the entry's where it carried them."""

    channel_id: str
    seq: int
    prev_hash: bytes
    hash: bytes
    content_hash: bytes


def _hex(value: str, length: int) -> bytes | None:
    if not isinstance(value, str) or len(value) != 2 * length:
        return None
    try:
        return bytes.fromhex(value)
    except ValueError:
        return None


def verify_entry(e: EntryRef) -> VerifiedEntry:
    """Checks one entry on its own and computes what it leaves out: ``content_hash`` from
    ``salt`` and ``content`` (which must match a ``content_hash`` carried too), then ``hash``
    from the fields (which must match a ``hash`` carried too). Raises :class:`ChainError`,
    ``malformed`` for an entry with neither ``salt`` nor ``content_hash``."""

    def malformed(field: str) -> ChainError:
        return ChainError("malformed", e.channel_id, e.seq, f"malformed hash field {field}")

    given_ch = None if e.content_hash is None else _hex(e.content_hash, 32)
    if e.content_hash is not None and given_ch is None:
        raise malformed("content_hash")
    prev = _hex(e.prev_hash, 32)
    if prev is None:
        raise malformed("prev_hash")
    given = None if e.hash is None else _hex(e.hash, 32)
    if e.hash is not None and given is None:
        raise malformed("hash")
    if e.kind not in KINDS:
        raise malformed("kind")
    if e.content is not None and e.salt is not None:
        salt = _hex(e.salt, SALT_LEN)
        if salt is None:
            raise malformed("salt")
        ch = content_hash(salt, e.content)
        if given_ch is not None and ch != given_ch:
            raise ChainError(
                "content_mismatch", e.channel_id, e.seq, "content does not match its content_hash"
            )
    elif given_ch is not None:
        ch = given_ch
    else:
        raise ChainError(
            "malformed", e.channel_id, e.seq, "neither salt (with content) nor content_hash"
        )
    digest = entry_hash(
        prev,
        seq=e.seq,
        kind=e.kind,
        channel_id=e.channel_id,
        author=e.author,
        ref=e.ref,
        ts_ms=e.ts_ms,
        content_hash=ch,
    )
    if given is not None and digest != given:
        raise ChainError("hash_mismatch", e.channel_id, e.seq, "hash does not match its fields")
    if e.seq == 1 and prev != ZERO_HASH:
        raise ChainError("bad_genesis", e.channel_id, e.seq, "entry 1 must have a zero prev_hash")
    return VerifiedEntry(e.channel_id, e.seq, prev, digest, ch)


class ChainVerifier:
    """The verified head ``(seq, hash)`` of every channel seen. See the module docs."""

    def __init__(self) -> None:
        self._heads: dict[str, tuple[int, bytes]] = {}

    def head(self, channel_id: str) -> tuple[int, bytes] | None:
        return self._heads.get(channel_id)

    def set_head(self, channel_id: str, seq: int, hash_: bytes) -> None:
        self._heads[channel_id] = (seq, hash_)

    def forget(self, channel_id: str) -> None:
        self._heads.pop(channel_id, None)

    def check(self, e: EntryRef) -> bool:
        """Verifies ``e`` and advances the head. True for the next entry, False for a
        duplicate (to drop). Raises :class:`ChainError` for anything else."""
        return self.link(verify_entry(e))

    def link(self, v: VerifiedEntry) -> bool:
        """Advances the head with an entry :func:`verify_entry` has checked on its own: the
        rest of :meth:`check`."""
        head = self._heads.get(v.channel_id)
        if head is not None:
            seq, head_hash = head
            if v.seq <= seq:
                if v.seq == seq and v.hash != head_hash:
                    raise ChainError(
                        "hash_mismatch", v.channel_id, v.seq, "differs from the entry seen before"
                    )
                return False
            if v.seq != seq + 1:
                raise ChainError(
                    "gap", v.channel_id, v.seq, f"expected entry {seq + 1} next, got {v.seq}"
                )
            if v.prev_hash != head_hash:
                raise ChainError(
                    "broken_link",
                    v.channel_id,
                    v.seq,
                    f"does not link to entry {seq} (prev_hash differs)",
                )
        self._heads[v.channel_id] = (v.seq, v.hash)
        return True


def _str(v: Any) -> str:
    return v if isinstance(v, str) else ""


def _seq(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def _opt_hash(v: Any) -> str | None:
    """A hash field a compact event may leave out: None when absent (or null); present but
    not a string reads as "" so that it is refused as malformed, never taken as absent."""
    if v is None:
        return None
    return v if isinstance(v, str) else ""


def event_entry(event: dict[str, Any]) -> EntryRef | ChainError | None:
    """The log entry a raw event carries, full or compact: None if the event is no log
    entry, a :class:`ChainError` (returned, not raised) if it claims to be one but is
    unreadable."""
    kind = event.get("event")
    if kind not in KINDS or "seq" not in event:
        return None
    channel = _str(event.get("channel"))
    seq = _seq(event.get("seq"))
    if seq is None:
        return ChainError("malformed", channel, 0, "malformed field seq")
    ts_ms = parse_ts_ms(_str(event.get("ts")))
    if ts_ms is None:
        return ChainError("malformed", channel, seq, "malformed field ts")
    ref = ""
    content = ""
    if kind == "message":
        message = event.get("message")
        if not isinstance(message, dict):
            return ChainError("malformed", channel, seq, "malformed field message")
        reply_to = message.get("reply_to")
        ref = _str(reply_to.get("id")) if isinstance(reply_to, dict) else ""
        content = _str(message.get("content"))
    elif kind == "message_edited":
        ref, content = _str(event.get("message_id")), _str(event.get("content"))
    elif kind == "message_deleted":
        ref = _str(event.get("message_id"))
    elif kind == "reaction":
        ref, content = _str(event.get("message_id")), _str(event.get("emoji"))
    elif kind == "reaction_deleted":
        ref = _str(event.get("reaction_id"))
    elif kind in ("member_joined", "member_left"):
        ref = _str(event.get("user"))
    elif kind == "channel_created":
        content = _str(event.get("name"))
    elif kind == "key_rotated":
        epoch = event.get("epoch")
        ref = str(epoch) if isinstance(epoch, int) and not isinstance(epoch, bool) else ""
        content = _str(event.get("commit_hash", event.get("content")))
    salt = event.get("salt")
    salt = salt if isinstance(salt, str) else None
    return EntryRef(
        channel_id=channel,
        seq=seq,
        kind=str(kind),
        author=_str(event.get("author")),
        ref=ref,
        ts_ms=ts_ms,
        content=content if salt is not None else None,
        salt=salt,
        content_hash=_opt_hash(event.get("content_hash")),
        prev_hash=_str(event.get("prev_hash")),
        hash=_opt_hash(event.get("hash")),
    )


def completed_event(event: dict[str, Any], v: VerifiedEntry) -> dict[str, Any]:
    """A log event that verified as ``v`` in its full form, whichever form it came in: with
    ``hash`` and ``content_hash`` (computed, equal to any sent), and the ``message`` object of
    a ``message`` event with the entry's ``seq``, ``author`` and ``ts``. A copy; every field
    the event carried is kept as it was."""
    full = dict(event)
    if full.get("hash") is None:
        full["hash"] = v.hash.hex()
    if full.get("content_hash") is None:
        full["content_hash"] = v.content_hash.hex()
    message = full.get("message")
    if full.get("event") == "message" and isinstance(message, dict):
        message = dict(message)
        for key in ("seq", "author", "ts"):
            if message.get(key) is None:
                message[key] = full.get(key)
        full["message"] = message
    return full


def log_entry_ref(channel_id: str, entry: dict[str, Any]) -> EntryRef:
    """A raw entry of ``GET /v1/channels/{id}/log`` as the verifier reads it. The log
    endpoint always sends the full form: an entry without ``hash`` or ``content_hash`` is
    malformed."""
    seq = _seq(entry.get("seq"))
    if seq is None:
        raise ChainError("malformed", channel_id, 0, "malformed field seq")
    ts_ms = parse_ts_ms(_str(entry.get("ts")))
    if ts_ms is None:
        raise ChainError("malformed", channel_id, seq, "malformed field ts")
    content = entry.get("content")
    salt = entry.get("salt")
    return EntryRef(
        channel_id=channel_id,
        seq=seq,
        kind=_str(entry.get("kind")),
        author=_str(entry.get("author")),
        ref=_str(entry.get("ref")),
        ts_ms=ts_ms,
        content=content if isinstance(content, str) else None,
        salt=salt if isinstance(salt, str) else None,
        content_hash=_str(entry.get("content_hash")),
        prev_hash=_str(entry.get("prev_hash")),
        hash=_str(entry.get("hash")),
    )


def verify_log_page(
    channel_id: str,
    after: int,
    entries: list[dict[str, Any]],
    known: tuple[int, bytes] | None = None,
) -> None:
    """Verifies a log page fetched with ``after``: entries start at ``after + 1``, are
    gapless and each links to the previous one. ``known`` is a verified head of the channel:
    the page must link to it when it starts right after it, and agree with it where it holds
    it. Raises :class:`ChainError`."""
    verifier = ChainVerifier()
    if known is not None and known[0] == after:
        verifier.set_head(channel_id, known[0], known[1])
    for i, raw in enumerate(entries):
        expected = after + 1 + i
        e = log_entry_ref(channel_id, raw)
        if e.seq != expected:
            raise ChainError("gap", channel_id, e.seq, f"expected entry {expected} next")
        verifier.check(e)
        head = verifier.head(channel_id)
        if known is not None and known[0] == e.seq and (head is None or head[1] != known[1]):
            raise ChainError("hash_mismatch", channel_id, e.seq, "differs from the verified head")

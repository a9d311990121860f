"""The inbound/outbound state machine of one client, with no I/O.

:class:`Session` takes frames in (:meth:`Session.handle_text`) and requests from the user
(:meth:`Session.request`) and yields outputs: text frames to write, replies to hand to their
waiters, and events to deliver. The socket task in :mod:`herald.client` only moves bytes
between it and the network, so everything that matters (id matching, chain verification,
dedupe on resume, what to resend after a reconnect) is tested without a server. It follows
the Rust SDK's ``session.rs`` rule for rule:

- after every ``connect`` it sends ``channel.list`` first and seeds the resume point of every
  member channel it has no verified head for from ``last_seq`` (so a quiet channel is resumed
  too); ``channel.create`` / ``channel.join`` answers seed the same way;
- ``resume`` carries the verified head of every channel, else the seed;
- a ``message.send`` with a ``client_id`` in flight when the connection drops is queued and
  resent after the reconnect (the server applies a repeated ``client_id`` once); every other
  request in flight fails with :class:`~herald.errors.ConnectionLostError`;
- subjects are resubscribed after every reconnect.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .chain import ChainVerifier, VerifiedEntry, completed_event, event_entry, verify_entry
from .errors import (
    ChainError,
    ConnectionLostError,
    HeraldError,
    ProtocolError,
    ServerError,
    server_error,
)
from .events import (
    ChainFailed,
    Connected,
    Disconnected,
    Event,
    ResumeTruncated,
    ServerErrorReply,
    parse_event,
)
from .models import ConnectInfo

log = logging.getLogger("herald")

W = TypeVar("W")


@dataclass
class Send:
    """Write this text frame to the socket."""

    text: str


@dataclass
class Reply(Generic[W]):
    """Answer a caller with ``ok`` or ``error``."""

    waiter: W
    ok: Any = None
    error: HeraldError | None = None


@dataclass
class Emit:
    """Deliver an event to listeners."""

    event: Event


@dataclass
class Rejected:
    """The server refused ``connect``; with ``unauthorized`` the client must stop."""

    error: ServerError


Output = Send | Reply[W] | Emit | Rejected


@dataclass
class _Pending(Generic[W]):
    request: dict[str, Any]
    # None for requests the session makes itself (seeding, resubscribe, unsubscribe).
    waiter: W | None

    def retryable(self) -> bool:
        return self.request.get("op") == "message.send" and bool(self.request.get("client_id"))


def _never(_: Any) -> bool:
    return False


class Session(Generic[W]):
    """The pure core of a client connection. See the module docs."""

    def __init__(self, *, seed_on_connect: bool = True, is_abandoned: Callable[[W], bool] = _never):
        self._next_id = 1
        # None: offline; an int: connecting with that request id; True: ready.
        self._connecting: int | None = None
        self._ready = False
        self._in_flight: dict[int, _Pending[W]] = {}
        self._queued: dict[int, _Pending[W]] = {}
        self.verifier = ChainVerifier()
        self._channels: set[str] = set()
        self._cursors: dict[str, int] = {}
        self._seed_on_connect = seed_on_connect
        self._seeding: int | None = None
        self._subjects: dict[str, int] = {}
        self._truncated_at: dict[str, tuple[int, bytes]] = {}
        self._is_abandoned = is_abandoned

    # -- state ------------------------------------------------------------------------

    @property
    def is_ready(self) -> bool:
        """Whether ``connect`` has been answered on the current connection."""
        return self._ready

    @property
    def is_seeding(self) -> bool:
        """Whether the ``channel.list`` that seeds the resume points is unanswered."""
        return self._seeding is not None

    @property
    def pending(self) -> int:
        return len(self._in_flight) + len(self._queued)

    def resume_points(self) -> dict[str, int]:
        """The last delivered ``seq`` of every channel: the ``resume`` of the next connect."""
        points = dict(self._cursors)
        for channel in self._channels:
            head = self.verifier.head(channel)
            if head is not None:
                points[channel] = head[0]
        return points

    def seed(self, channel: str, seq: int) -> None:
        """Seeds a resume point unless the channel has one: a verified head or an earlier
        seed is never moved (backwards would replay, forwards could skip)."""
        if channel in self._channels or self.verifier.head(channel) is not None:
            return
        self._cursors.setdefault(channel, seq)

    def anchor(self, channel: str, after: int) -> tuple[int, bytes] | None:
        """A verified ``(seq, hash)`` to anchor a log page fetched after ``after``."""
        truncated = self._truncated_at.get(channel)
        if truncated is not None and truncated[0] == after:
            return truncated
        return self.verifier.head(channel)

    def _take_id(self) -> int:
        i = self._next_id
        self._next_id += 1
        return i

    # -- outbound ---------------------------------------------------------------------

    def connect(self, token: str, *, device: str | None = None) -> str:
        """Starts a connection: the ``connect`` frame to send first, with resume points
        (and the E2EE ``device`` the connection speaks for, if any)."""
        i = self._take_id()
        self._connecting = i
        self._ready = False
        frame: dict[str, Any] = {"id": i, "op": "connect", "token": token}
        if device is not None:
            frame["device"] = device
        points = self.resume_points()
        if points:
            frame["resume"] = dict(sorted(points.items()))
        return json.dumps(frame)

    def request(self, request: dict[str, Any], waiter: W) -> list[Output[W]]:
        """Queues or sends a request (``{"op": …, …}``) for a caller."""
        out: list[Output[W]] = []
        self._push(request, waiter, out)
        return out

    def _push(self, request: dict[str, Any], waiter: W | None, out: list[Output[W]]) -> int:
        i = self._take_id()
        pending = _Pending(request, waiter)
        if self._ready:
            self._send(i, pending, out)
        else:
            self._queued[i] = pending
        return i

    def _send(self, i: int, pending: _Pending[W], out: list[Output[W]]) -> None:
        if pending.waiter is not None and self._is_abandoned(pending.waiter):
            log.debug("abandoned %s not sent", pending.request.get("op"))
            return
        try:
            text = json.dumps({"id": i, **pending.request})
        except (TypeError, ValueError) as e:
            if pending.waiter is not None:
                err = ProtocolError(f"cannot encode {pending.request.get('op')}: {e}")
                out.append(Reply(pending.waiter, error=err))
            return
        out.append(Send(text))
        self._in_flight[i] = pending

    def subscribe(self, subject: str, waiter: W) -> list[Output[W]]:
        """Adds a local subscription; subscribes on the server and after every reconnect."""
        self._subjects[subject] = self._subjects.get(subject, 0) + 1
        return self.request({"op": "subscribe", "subject": subject}, waiter)

    def unsubscribe(self, subject: str, waiter: W | None = None) -> list[Output[W]]:
        """Removes a local subscription; unsubscribes on the server with the last one.
        ``waiter`` is answered by the server's reply, or at once when none is needed."""
        out: list[Output[W]] = []
        n = self._subjects.get(subject, 0)
        if n > 1:
            self._subjects[subject] = n - 1
        elif n == 1:
            del self._subjects[subject]
            if self._ready:
                self._push({"op": "unsubscribe", "subject": subject}, waiter, out)
                return out
        if waiter is not None:
            out.append(Reply(waiter, ok={}))
        return out

    # -- inbound ----------------------------------------------------------------------

    def handle_text(self, text: str) -> list[Output[W]]:
        """Feeds one text frame received from the server."""
        try:
            frame = json.loads(text)
        except ValueError:
            log.warning("unreadable frame from server ignored")
            return []
        if not isinstance(frame, dict):
            log.warning("frame from server that is not an object ignored")
            return []
        if "event" in frame:
            return self.handle_event(frame)
        return self._handle_reply(frame)

    def _handle_reply(self, frame: dict[str, Any]) -> list[Output[W]]:
        out: list[Output[W]] = []
        i = frame.get("id")
        error = frame.get("error")
        if not isinstance(i, int) or isinstance(i, bool):
            if error is not None:
                out.append(Emit(ServerErrorReply(server_error(error))))
            return out
        if i == self._connecting:
            self._handle_connect_reply(frame, out)
            return out
        pending = self._in_flight.pop(i, None)
        if pending is None:
            log.debug("reply %s to no pending request ignored", i)
            return out
        if self._seeding == i:
            self._seeding = None
        ok = frame.get("ok")
        err: HeraldError | None = None
        if error is not None:
            err = server_error(error)
        elif "ok" not in frame:
            err = ProtocolError(f"reply {i} has neither ok nor error")
        else:
            self._learn(pending.request, ok)
        if pending.waiter is not None:
            out.append(Reply(pending.waiter, ok=ok, error=err))
        elif err is not None:
            log.warning("background %s failed: %s", pending.request.get("op"), err)
        return out

    def _learn(self, request: dict[str, Any], ok: Any) -> None:
        if not isinstance(ok, dict):
            return
        op = request.get("op")
        if op == "channel.list":
            channels = ok.get("channels")
            for c in channels if isinstance(channels, list) else []:
                if isinstance(c, dict):
                    cid, seq = c.get("id"), c.get("last_seq")
                    if isinstance(cid, str) and isinstance(seq, int):
                        self.seed(cid, seq)
        elif op in ("channel.create", "channel.join"):
            channel = ok.get("channel")
            if isinstance(channel, dict):
                cid, seq = channel.get("id"), channel.get("last_seq")
                if isinstance(cid, str) and isinstance(seq, int):
                    self.seed(cid, seq)

    def _handle_connect_reply(self, frame: dict[str, Any], out: list[Output[W]]) -> None:
        self._connecting = None
        error = frame.get("error")
        if error is not None:
            out.append(Rejected(server_error(error)))
            return
        try:
            info = ConnectInfo.from_json(frame.get("ok"))
        except ProtocolError as e:
            out.append(Rejected(server_error({"code": "bad_request", "message": str(e)})))
            return
        self._ready = True
        out.append(Emit(Connected(info)))
        if self._seed_on_connect:
            # First, so it is answered before anything the user queued.
            self._seeding = self._push({"op": "channel.list"}, None, out)
        queued_subjects = {
            p.request.get("subject")
            for p in self._queued.values()
            if p.request.get("op") == "subscribe"
        }
        for subject in sorted(self._subjects):
            if subject not in queued_subjects:
                self._push({"op": "subscribe", "subject": subject}, None, out)
        queued, self._queued = self._queued, {}
        for i in sorted(queued):
            self._send(i, queued[i], out)

    def handle_event(self, raw: dict[str, Any]) -> list[Output[W]]:
        """Feeds one server push: log events are verified and deduplicated. A log event is
        checked on its own first, which computes what a compact one leaves out, and typed
        from its full form, so users get the same event whichever form the server sent; it
        is delivered only if it then links to the channel's head."""
        out: list[Output[W]] = []
        entry = event_entry(raw)
        if isinstance(entry, ChainError):
            out.append(Emit(ChainFailed(entry)))
            return out
        verified: VerifiedEntry | None = None
        if entry is not None:
            try:
                verified = verify_entry(entry)
            except ChainError as e:
                out.append(Emit(ChainFailed(e)))
                return out
            raw = completed_event(raw, verified)
        try:
            event = parse_event(raw)
        except ProtocolError as e:
            log.warning("unreadable %s event ignored: %s", raw.get("event"), e)
            return out
        if isinstance(event, ResumeTruncated):
            # The entries between our head and from_seq will not come: re-anchor on the
            # first replayed entry; the caller pages the hole, anchored on the old head.
            head = self.verifier.head(event.channel)
            if head is not None:
                self._truncated_at[event.channel] = head
            self.verifier.forget(event.channel)
            self._channels.discard(event.channel)
            out.append(Emit(event))
            return out
        if verified is not None:
            try:
                fresh = self.verifier.link(verified)
            except ChainError as e:
                out.append(Emit(ChainFailed(e)))
                return out
            if not fresh:
                return out
            self._cursors.pop(verified.channel_id, None)
            self._channels.add(verified.channel_id)
        out.append(Emit(event))
        return out

    # -- connection changes -----------------------------------------------------------

    def disconnected(self, reason: str) -> list[Output[W]]:
        """The connection dropped: what was in flight fails with ConnectionLostError,
        except sends with a ``client_id``, queued to be resent after the next connect."""
        was_ready = self._ready
        self._ready = False
        self._connecting = None
        self._seeding = None
        out: list[Output[W]] = []
        for i in sorted(self._in_flight):
            pending = self._in_flight[i]
            if pending.retryable():
                self._queued[i] = pending
            elif pending.waiter is not None:
                out.append(Reply(pending.waiter, error=ConnectionLostError(reason)))
        self._in_flight.clear()
        # Background requests are redone after the reconnect (resubscribe, seeding).
        self._queued = {i: p for i, p in self._queued.items() if p.waiter is not None}
        if was_ready:
            out.append(Emit(Disconnected(reason)))
        return out

    def shutdown(self, error: Callable[[], HeraldError]) -> list[Output[W]]:
        """The client stops for good: every waiting caller gets ``error()``."""
        self._ready = False
        self._connecting = None
        self._seeding = None
        everything = {**self._queued, **self._in_flight}
        self._queued, self._in_flight = {}, {}
        out: list[Output[W]] = []
        for i in sorted(everything):
            waiter = everything[i].waiter
            if waiter is not None:
                out.append(Reply(waiter, error=error()))
        return out

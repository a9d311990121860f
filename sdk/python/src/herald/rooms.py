"""Rooms (PROTOCOL.md §8, docs/protocol.md §J): participants, room messages with binary
attachments, and streams of chunks paced by the reader's credit.

::

    room = client.room("lobby")
    room.messaging.on("message", lambda m: print(m.sender.user, m.type, m.message))
    await room.enter({"role": "agent"})
    for p in room.remote_participants.values():
        await room.messaging.send_message(p.participant_id, "hello", {"text": "hi"})
    writer = await room.messaging.create_stream(to=p.participant_id, header={"name": "f"})
    await writer.write(data)  # waits for the reader's credit
    await writer.close()

    async for request in room.messaging.stream_requests():
        reader = await request.accept()
        async for chunk in reader:  # credit is granted as chunks are consumed
            ...

Room requests bypass the session's resend logic: a participant lives as long as one
connection, so a room request in flight when the connection drops fails with
:class:`~herald.errors.ConnectionLostError`, a room request made while the client is
reconnecting fails at once the same way, open streams end with :class:`StreamAborted`, and
every room hears ``disconnected``: enter again after the reconnect (``Connected`` on
``client.events()``).

Inside the socket task, :class:`RoomDriver` sorts room replies (by their id range) and room
events (by their name) out of the socket before the session sees them; binary frames
(``u32 big-endian header length ‖ header JSON ‖ bytes``, PROTOCOL.md §1) are only ever room
traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import re
import struct
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import (
    ConnectionLostError,
    HeraldError,
    ProtocolError,
    RequestTimeoutError,
    server_error,
)
from .events import Event
from .models import _obj, _s

if TYPE_CHECKING:
    from .client import Client, EventStream

log = logging.getLogger("herald")

# Room request ids start here, far above the session's, so a reply is sorted by its id
# (the Rust SDK does the same).
FIRST_ROOM_ID = 1 << 40

#: The credit a reader grants when none is given (the server's default too): 1 MiB.
DEFAULT_STREAM_CREDIT = 1 << 20

#: The largest chunk a :class:`StreamWriter` sends in one frame.
CHUNK_BYTES = 64 * 1024

# Chunk requests a writer keeps unanswered at most (they are pipelined within the credit).
_CHUNKS_IN_FLIGHT = 16

# Events of streams not routed yet (a writer's first credit comes before the stream.open
# reply), kept for at most this many streams, this many events each.
_EARLY_STREAMS = 256
_EARLY_EVENTS = 4096

ROOM_EVENTS = (
    "participant_added",
    "participant_updated",
    "participant_removed",
    "presence_count",
    "room_message",
    "stream_request",
    "stream_chunk",
    "stream_credit",
    "stream_closed",
    "stream_aborted",
)
_STREAM_EVENTS = frozenset(("stream_chunk", "stream_credit", "stream_closed", "stream_aborted"))

_REPLY_ID = re.compile(r'\{"id":(\d+)[,}]')
_EVENT_NAME = re.compile(r'\{"event":"([a-z_]+)"')

# -- binary frames ------------------------------------------------------------------------


def encode_binary(header: dict[str, Any], data: bytes) -> bytes:
    """``u32be(len(header)) ‖ header JSON ‖ data`` (PROTOCOL.md §1)."""
    h = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack(">I", len(h)) + h + data


def parse_binary(frame: bytes) -> tuple[dict[str, Any], bytes]:
    """The header object and the bytes of a binary frame; :class:`ProtocolError` if the
    length runs past the frame or the header is not a JSON object."""
    if len(frame) < 4:
        raise ProtocolError("binary frame shorter than its length prefix")
    (n,) = struct.unpack_from(">I", frame)
    if n > len(frame) - 4:
        raise ProtocolError(f"binary frame header length {n} runs past the frame")
    try:
        header = json.loads(frame[4 : 4 + n])
    except ValueError as e:
        raise ProtocolError(f"binary frame header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise ProtocolError("binary frame header is not an object")
    return header, frame[4 + n :]


# -- what rooms deliver -------------------------------------------------------------------


@dataclass(frozen=True)
class Participant:
    """One participant of a room: one connection of ``user`` that entered it."""

    participant_id: str
    user: str
    name: str | None
    kind: str
    attributes: dict[str, Any]

    @classmethod
    def from_json(cls, v: Any) -> Participant:
        d = _obj(v, "participant")
        attributes = d.get("attributes")
        name = d.get("name")
        kind = d.get("kind")
        return cls(
            participant_id=_s(d, "participant_id"),
            user=_s(d, "user"),
            name=name if isinstance(name, str) else None,
            kind=kind if isinstance(kind, str) else "human",
            attributes=attributes if isinstance(attributes, dict) else {},
        )


@dataclass(frozen=True)
class RoomEvent(Event):
    """Base class of what a room delivers."""


@dataclass(frozen=True)
class ParticipantAdded(RoomEvent):
    channel: str
    participant: Participant


@dataclass(frozen=True)
class ParticipantUpdated(RoomEvent):
    """New attributes; also the first news of a participant whose add was coalesced away."""

    channel: str
    participant: Participant


@dataclass(frozen=True)
class ParticipantRemoved(RoomEvent):
    channel: str
    participant: Participant


@dataclass(frozen=True)
class PresenceCount(RoomEvent):
    """The room is past ``--presence-list-max``: only the count is sent."""

    channel: str
    count: int


@dataclass(frozen=True)
class RoomMessage(RoomEvent):
    """A direct (``room.send``) or broadcast message; ``attachment`` holds the bytes of a
    binary frame, byte for byte."""

    channel: str
    sender: Participant
    type: str
    message: Any
    attachment: bytes | None = None


@dataclass(frozen=True)
class RoomDisconnected(RoomEvent):
    """The connection dropped: this client is no longer a participant; enter again."""

    channel: str
    reason: str


@dataclass(frozen=True)
class StreamRequest(RoomEvent):
    """Another participant wants to stream to this one: :meth:`accept` or :meth:`reject`."""

    channel: str
    stream_id: str
    sender: Participant
    header: Any
    _room: Room | None = field(default=None, repr=False, compare=False)

    async def accept(self, credit: int = DEFAULT_STREAM_CREDIT) -> StreamReader:
        """Accepts with a window of ``credit`` bytes: the reader yields the chunks and grants
        more credit as they are consumed, so the writer runs at the reader's pace."""
        if self._room is None:
            raise HeraldError("stream request not bound to a room")
        return await self._room.messaging.accept_stream(self.stream_id, credit)

    async def reject(self) -> None:
        """Rejects: the writer's ``create_stream`` fails with ``forbidden``."""
        if self._room is None:
            raise HeraldError("stream request not bound to a room")
        await self._room.messaging.reject_stream(self.stream_id)


class StreamRequests(AsyncIterator[StreamRequest]):
    """The :class:`StreamRequest` events of one room, from :meth:`Messaging.stream_requests`;
    ends when the connection drops (``RoomDisconnected``)."""

    def __init__(self, events: EventStream) -> None:
        self._events = events

    def __aiter__(self) -> StreamRequests:
        return self

    async def __anext__(self) -> StreamRequest:
        async for event in self._events:
            if isinstance(event, StreamRequest):
                return event
            if isinstance(event, RoomDisconnected):
                break
        self._events.close()
        raise StopAsyncIteration

    def close(self) -> None:
        self._events.close()


class StreamAborted(HeraldError):
    """The stream ended without ``stream.close``: the other side left, vanished or the
    connection dropped (``reason`` says which), or the other side closed it early."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"stream aborted: {reason}")
        self.reason = reason


def _room_event(d: dict[str, Any], data: bytes | None, room: Room | None) -> RoomEvent | None:
    name = d.get("event")
    channel = _s(d, "channel")
    if name == "participant_added":
        return ParticipantAdded(channel, Participant.from_json(d.get("participant")))
    if name == "participant_updated":
        return ParticipantUpdated(channel, Participant.from_json(d.get("participant")))
    if name == "participant_removed":
        return ParticipantRemoved(channel, Participant.from_json(d.get("participant")))
    if name == "presence_count":
        count = d.get("count")
        if not isinstance(count, int) or isinstance(count, bool):
            raise ProtocolError("presence_count without an integer count")
        return PresenceCount(channel, count)
    if name == "room_message":
        sender = Participant.from_json(d.get("from"))
        return RoomMessage(channel, sender, _s(d, "type"), d.get("message"), data)
    if name == "stream_request":
        sender = Participant.from_json(d.get("from"))
        return StreamRequest(channel, _s(d, "stream_id"), sender, d.get("header"), room)
    return None


# -- the driver inside the socket task ----------------------------------------------------


class _StreamSink:
    """What the driver routes one stream's events to (a reader or a writer)."""

    def _feed(self, name: str, d: dict[str, Any], data: bytes | None) -> None:
        raise NotImplementedError

    def _lost(self, reason: str) -> None:
        raise NotImplementedError


class RoomDriver:
    """The room part of a client's socket task: ids, replies, event routing."""

    def __init__(self, send: Callable[[str | bytes], bool]) -> None:
        self._send = send
        self._next_id = FIRST_ROOM_ID
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._rooms: dict[str, list[Room]] = {}
        self._routes: dict[str, _StreamSink] = {}
        self._early: dict[str, list[tuple[str, dict[str, Any], bytes | None]]] = {}

    def request(self, request: dict[str, Any], data: bytes | None) -> asyncio.Future[Any]:
        """Sends a room request now (binary when ``data`` is given); its future gets the
        ``ok`` or the error. Offline: fails at once with ConnectionLostError."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        i = self._next_id
        self._next_id += 1
        frame = {"id": i, **request}
        try:
            out: str | bytes = encode_binary(frame, data) if data is not None else json.dumps(frame)
        except (TypeError, ValueError) as e:
            fut.set_exception(ProtocolError(f"cannot encode {request.get('op')}: {e}"))
            return fut
        self._pending[i] = fut
        if not self._send(out):
            del self._pending[i]
            fut.set_exception(
                ConnectionLostError("not connected: room requests need a live connection")
            )
        return fut

    def add_room(self, channel_id: str, room: Room) -> None:
        rooms = self._rooms.setdefault(channel_id, [])
        if room not in rooms:
            rooms.append(room)

    def remove_room(self, channel_id: str, room: Room) -> None:
        rooms = self._rooms.get(channel_id, [])
        if room in rooms:
            rooms.remove(room)
        if not rooms:
            self._rooms.pop(channel_id, None)

    def route(self, stream_id: str, sink: _StreamSink) -> None:
        self._routes[stream_id] = sink
        for name, d, data in self._early.pop(stream_id, []):
            self._deliver_stream(name, d, data)

    def unroute(self, stream_id: str) -> None:
        self._routes.pop(stream_id, None)

    def handle_text(self, text: str) -> bool:
        """Takes a text frame if it is a room reply or event; False leaves it to the session."""
        head = text[:64]
        m = _REPLY_ID.match(head)
        if m is not None:
            if int(m.group(1)) < FIRST_ROOM_ID:
                return False
            try:
                frame = json.loads(text)
            except ValueError:
                log.warning("unreadable room reply ignored")
                return True
            if isinstance(frame, dict):
                self._answer(frame)
            return True
        m = _EVENT_NAME.match(head)
        if m is None or m.group(1) not in ROOM_EVENTS:
            return False
        try:
            d = json.loads(text)
        except ValueError:
            log.warning("unreadable room event ignored")
            return True
        if isinstance(d, dict):
            self._dispatch(d, None)
        return True

    def handle_binary(self, frame: bytes) -> None:
        try:
            header, data = parse_binary(frame)
        except ProtocolError as e:
            log.warning("binary frame ignored: %s", e)
            return
        if "event" in header:
            self._dispatch(header, data)
        elif "id" in header:
            self._answer(header)

    def _answer(self, frame: dict[str, Any]) -> None:
        i = frame.get("id")
        fut = self._pending.pop(i, None) if isinstance(i, int) else None
        if fut is None or fut.done():
            return
        error = frame.get("error")
        if error is not None:
            fut.set_exception(server_error(error))
        elif "ok" in frame:
            fut.set_result(frame["ok"])
        else:
            fut.set_exception(ProtocolError(f"reply {i} has neither ok nor error"))

    def _dispatch(self, d: dict[str, Any], data: bytes | None) -> None:
        name = d.get("event")
        if not isinstance(name, str):
            return
        if name in _STREAM_EVENTS:
            self._deliver_stream(name, d, data)
            return
        channel = d.get("channel")
        rooms = self._rooms.get(channel, []) if isinstance(channel, str) else []
        for room in list(rooms):
            try:
                event = _room_event(d, data, room)
            except ProtocolError as e:
                log.warning("unreadable %s event ignored: %s", name, e)
                return
            if event is not None:
                room._on_event(event)

    def _deliver_stream(self, name: str, d: dict[str, Any], data: bytes | None) -> None:
        stream_id = d.get("stream_id")
        if not isinstance(stream_id, str):
            return
        sink = self._routes.get(stream_id)
        if sink is not None:
            if name in ("stream_closed", "stream_aborted"):
                self._routes.pop(stream_id, None)
            sink._feed(name, d, data)
            return
        if len(self._early) < _EARLY_STREAMS or stream_id in self._early:
            early = self._early.setdefault(stream_id, [])
            if len(early) < _EARLY_EVENTS:
                early.append((name, d, data))
        else:
            log.debug("event of an unknown stream ignored")

    def disconnected(self, reason: str) -> None:
        """The connection dropped: requests in flight fail, streams and rooms hear of it."""
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(ConnectionLostError(reason))
        routes, self._routes = self._routes, {}
        for sink in routes.values():
            sink._lost(reason)
        self._early.clear()
        for rooms in list(self._rooms.values()):
            for room in list(rooms):
                room._disconnected(reason)


# -- rooms --------------------------------------------------------------------------------

Callback = Callable[[Any], "Awaitable[None] | None"]

_ON_NAMES: dict[str, type[RoomEvent]] = {
    "message": RoomMessage,
    "participant_added": ParticipantAdded,
    "participant_updated": ParticipantUpdated,
    "participant_removed": ParticipantRemoved,
    "presence_count": PresenceCount,
    "stream_request": StreamRequest,
    "disconnected": RoomDisconnected,
}


def _uuid_like(s: str) -> bool:
    return bool(re.fullmatch(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}", s))


class Room:
    """A channel used as a room, from :meth:`herald.Client.room`. Nothing of it is stored:
    it lives while this connection has entered it."""

    def __init__(self, client: Client, channel: str) -> None:
        self.client = client
        self.channel = channel
        self.channel_id: str | None = channel if _uuid_like(channel) else None
        self.participant_id: str | None = None
        self.local_participant: Participant | None = None
        #: The other participants by id, kept current from presence events.
        self.remote_participants: dict[str, Participant] = {}
        #: How many participants the room has (the caller counted), when known.
        self.count: int | None = None
        self.messaging = Messaging(self)
        self._entering: list[RoomEvent] | None = None

    def __repr__(self) -> str:
        return f"Room(channel={self.channel!r}, participant_id={self.participant_id!r})"

    @property
    def entered(self) -> bool:
        return self.participant_id is not None

    async def _resolve(self) -> str:
        if self.channel_id is None:
            # Events name the channel by id; a name is resolved once (the caller is a member).
            info = await self.client.rest.channel_info(self.channel)
            self.channel_id = info.channel.id
        return self.channel_id

    async def _call(self, op: str, data: bytes | None = None, **fields: Any) -> Any:
        return await self.client._room_request({"op": op, **fields}, data)

    async def enter(self, attributes: dict[str, Any] | None = None) -> Room:
        """``room.enter`` with ``attributes`` (a JSON object, at most 4 KiB serialized);
        afterwards :attr:`participant_id` is this client's and :attr:`remote_participants`
        the others (empty past ``--presence-list-max``: then :attr:`count` and
        :meth:`participants`). Register callbacks first to miss nothing after it."""
        channel_id = await self._resolve()
        self.client._rooms.add_room(channel_id, self)
        self._entering = []
        fields: dict[str, Any] = {"channel": channel_id}
        if attributes is not None:
            fields["attributes"] = attributes
        try:
            ok = await self._call("room.enter", **fields)
            d = _obj(ok, "room.enter reply")
            pid = _s(d, "participant_id")
            listed = d.get("participants")
            remote: dict[str, Participant] = {}
            me: Participant | None = None
            if isinstance(listed, list):
                for raw in listed:
                    p = Participant.from_json(raw)
                    if p.participant_id == pid:
                        me = p
                    else:
                        remote[p.participant_id] = p
                self.count = len(listed)
            count = d.get("count")
            if isinstance(count, int) and not isinstance(count, bool):
                self.count = count
            self.participant_id, self.local_participant = pid, me
            self.remote_participants = remote
            early, self._entering = self._entering, None
            for event in early:
                self._apply(event)
        finally:
            self._entering = None
        return self

    async def update(self, attributes: dict[str, Any]) -> None:
        """``room.update``: replaces this participant's attributes."""
        await self._call("room.update", channel=await self._resolve(), attributes=attributes)

    async def leave(self) -> None:
        """``room.leave``: the others get ``participant_removed``; streams end."""
        channel_id = await self._resolve()
        await self._call("room.leave", channel=channel_id)
        self.participant_id = None
        self.local_participant = None
        self.remote_participants = {}
        # Events of this room are no longer this handle's (enter registers it again).
        self.client._rooms.remove_room(channel_id, self)

    async def participants(self, page: int = 1000) -> list[Participant]:
        """Every participant (the caller included), paging ``room.participants``."""
        channel = await self._resolve()
        out: list[Participant] = []
        while True:
            fields: dict[str, Any] = {"channel": channel, "limit": page}
            if out:
                fields["after"] = out[-1].participant_id
            ok = _obj(await self._call("room.participants", **fields), "room.participants")
            listed = ok.get("participants")
            got = [Participant.from_json(p) for p in listed] if isinstance(listed, list) else []
            out.extend(got)
            if not ok.get("has_more") or not got:
                return out

    def _on_event(self, event: RoomEvent) -> None:
        if self._entering is not None:
            self._entering.append(event)
            # Callbacks hear it now; the participant list takes it after the reply.
            self.messaging._emit(event)
            return
        self._apply(event)
        self.messaging._emit(event)

    def _apply(self, event: RoomEvent) -> None:
        if isinstance(event, ParticipantAdded | ParticipantUpdated):
            # An update of an unknown id is an addition (coalescing folded the add away).
            if event.participant.participant_id != self.participant_id:
                self.remote_participants[event.participant.participant_id] = event.participant
        elif isinstance(event, ParticipantRemoved):
            self.remote_participants.pop(event.participant.participant_id, None)
        elif isinstance(event, PresenceCount):
            self.count = event.count

    def _disconnected(self, reason: str) -> None:
        was = self.participant_id is not None
        self.participant_id = None
        self.local_participant = None
        self.remote_participants = {}
        if was and self.channel_id is not None:
            self.messaging._emit(RoomDisconnected(self.channel_id, reason))


class Messaging:
    """``room.messaging``: messages, events and streams of one room."""

    def __init__(self, room: Room) -> None:
        self.room = room
        self._callbacks: dict[type[RoomEvent], list[Callback]] = {}
        self._streams: list[EventStream] = []
        self._tasks: set[asyncio.Task[None]] = set()

    # -- messages -------------------------------------------------------------------------

    async def send_message(
        self, to: str, type: str, message: Any, attachment: bytes | None = None
    ) -> None:
        """``room.send`` to one participant (its id); ``attachment`` goes as the bytes of a
        binary frame (at most ``--max-attachment-bytes``). ``not_found`` when it is gone."""
        room = self.room
        await room._call(
            "room.send",
            attachment,
            channel=await room._resolve(),
            to=to,
            type=type,
            message=message,
        )

    async def broadcast_message(
        self, type: str, message: Any, attachment: bytes | None = None
    ) -> None:
        """``room.broadcast`` to every other participant."""
        room = self.room
        await room._call(
            "room.broadcast", attachment, channel=await room._resolve(), type=type, message=message
        )

    # -- events ---------------------------------------------------------------------------

    def on(self, name: str, callback: Callback) -> Callable[[], None]:
        """Calls ``callback(event)`` for every event ``name`` of this room: ``message``
        (:class:`RoomMessage`), ``participant_added`` / ``participant_updated`` /
        ``participant_removed``, ``presence_count``, ``stream_request``
        (:class:`StreamRequest`), ``disconnected``. A coroutine function runs as a task of
        its own per event; a plain one runs in the socket task and must not block.
        Returns a function that removes the callback."""
        cls = _ON_NAMES.get(name)
        if cls is None:
            raise ValueError(f"unknown room event {name!r}: one of {', '.join(_ON_NAMES)}")
        self._callbacks.setdefault(cls, []).append(callback)

        def off() -> None:
            with contextlib.suppress(ValueError):
                self._callbacks.get(cls, []).remove(callback)

        return off

    def events(self, capacity: int | None = None) -> EventStream:
        """Every event of this room from now on, as a bounded stream (a reader that far
        behind gets a final ``Lagged``)."""
        from .client import EventStream

        stream = EventStream(capacity or self.room.client.config.event_buffer)
        self._streams.append(stream)
        return stream

    def stream_requests(self) -> StreamRequests:
        """The stream requests of this room from the moment of this call (until the
        connection drops), as an async iterator."""
        return StreamRequests(self.events())

    def _emit(self, event: RoomEvent) -> None:
        self._streams = [s for s in self._streams if s._offer(event)]
        for cb in list(self._callbacks.get(type(event), [])):
            try:
                result = cb(event)
            except Exception:
                log.exception("room callback for %s failed", type(event).__name__)
                continue
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(_guard(result, type(event).__name__))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    # -- streams --------------------------------------------------------------------------

    async def create_stream(self, to: str, header: Any = None) -> StreamWriter:
        """``stream.open`` to participant ``to`` with ``header`` (JSON): returns once it
        accepts (``forbidden`` if it rejects, ``not_found`` if it is gone or does not answer
        within the server's 30 s)."""
        room = self.room
        client = room.client
        fields = {
            "op": "stream.open",
            "channel": await room._resolve(),
            "to": to,
            "header": header if header is not None else {},
        }
        fut = client._rooms.request(fields, None)
        wait = max(client.config.request_timeout, 35.0)
        try:
            ok = await asyncio.wait_for(fut, wait)
        except asyncio.TimeoutError:
            raise RequestTimeoutError(f"stream.open: no answer within {wait} s") from None
        stream_id = _s(_obj(ok, "stream.open reply"), "stream_id")
        writer = StreamWriter(client, stream_id)
        client._rooms.route(stream_id, writer)
        return writer

    async def accept_stream(
        self, stream_id: str, credit: int = DEFAULT_STREAM_CREDIT
    ) -> StreamReader:
        """``stream.accept`` with a window of ``credit`` bytes (:meth:`StreamRequest.accept`)."""
        client = self.room.client
        reader = StreamReader(client, stream_id, max(credit, 1))
        client._rooms.route(stream_id, reader)
        try:
            await client._room_request(
                {"op": "stream.accept", "stream_id": stream_id, "credit": reader.window}, None
            )
        except BaseException:
            client._rooms.unroute(stream_id)
            raise
        return reader

    async def reject_stream(self, stream_id: str) -> None:
        await self.room.client._room_request({"op": "stream.reject", "stream_id": stream_id}, None)


async def _guard(aw: Awaitable[None], what: str) -> None:
    try:
        await aw
    except Exception:
        log.exception("room callback for %s failed", what)


class StreamWriter(_StreamSink):
    """The writing side of a stream: :meth:`write` sends within the reader's credit and
    waits for more, so a slow reader paces it (``credit_waits`` counts the waits,
    ``credit_wait_seconds`` sums them)."""

    def __init__(self, client: Client, stream_id: str) -> None:
        self.client = client
        self.stream_id = stream_id
        #: Credit granted and not used yet.
        self.credit = 0
        self.credit_waits = 0
        self.credit_wait_seconds = 0.0
        self.bytes_written = 0
        self._wake = asyncio.Event()
        self._ended: HeraldError | None = None
        self._in_flight: deque[asyncio.Future[Any]] = deque()

    def _feed(self, name: str, d: dict[str, Any], data: bytes | None) -> None:
        if name == "stream_credit":
            n = d.get("bytes")
            if isinstance(n, int) and not isinstance(n, bool) and n > 0:
                self.credit += n
        elif name == "stream_closed":
            self._ended = StreamAborted("the reader closed the stream")
        elif name == "stream_aborted":
            reason = d.get("reason")
            self._ended = StreamAborted(reason if isinstance(reason, str) else "aborted")
        self._wake.set()

    def _lost(self, reason: str) -> None:
        self._ended = ConnectionLostError(reason)
        self._wake.set()

    async def _settle(self, keep: int) -> None:
        while len(self._in_flight) > keep:
            await self._in_flight.popleft()

    async def write(self, data: bytes) -> None:
        """Writes ``data`` in chunks of at most :data:`CHUNK_BYTES`, waiting for credit
        whenever the reader's is used up. Raises :class:`StreamAborted` (or
        ``ConnectionLostError``) once the stream is gone."""
        view = memoryview(data)
        while len(view):
            while self.credit == 0:
                if self._ended is not None:
                    raise self._ended
                self._wake.clear()
                self.credit_waits += 1
                start = time.monotonic()
                await self._wake.wait()
                self.credit_wait_seconds += time.monotonic() - start
            if self._ended is not None:
                raise self._ended
            n = min(len(view), CHUNK_BYTES, self.credit)
            self.credit -= n
            fut = self.client._rooms.request(
                {"op": "stream.chunk", "stream_id": self.stream_id}, bytes(view[:n])
            )
            # Awaited in _settle; marked retrieved too, for when the stream ends first.
            fut.add_done_callback(_ignore)
            self._in_flight.append(fut)
            self.bytes_written += n
            view = view[n:]
            # Chunks are pipelined; an error reply surfaces here a few chunks later.
            await self._settle(_CHUNKS_IN_FLIGHT)

    async def close(self) -> None:
        """Waits for every chunk's answer, then ``stream.close``: the reader's iteration
        ends after the last chunk."""
        try:
            await self._settle(0)
        finally:
            self.client._rooms.unroute(self.stream_id)
        await self.client._room_request({"op": "stream.close", "stream_id": self.stream_id}, None)


class StreamReader(_StreamSink, AsyncIterator[bytes]):
    """The reading side of a stream: ``async for chunk in reader`` yields the chunks in
    order; every chunk consumed counts toward the next ``stream.credit`` (half the window at
    a time), so the writer is held to what this reader has taken, and the buffer here never
    exceeds the window. Ends after ``stream_closed``; raises :class:`StreamAborted` when the
    writer vanished."""

    def __init__(self, client: Client, stream_id: str, window: int) -> None:
        self.client = client
        self.stream_id = stream_id
        self.window = window
        self.bytes_read = 0
        self.header: Any = None
        self._consumed = 0
        self._chunks: deque[bytes] = deque()
        self._end: HeraldError | None = None
        self._closed = False
        self._wake = asyncio.Event()

    def _feed(self, name: str, d: dict[str, Any], data: bytes | None) -> None:
        if name == "stream_chunk":
            self._chunks.append(data or b"")
        elif name == "stream_closed":
            self._closed = True
        elif name == "stream_aborted":
            reason = d.get("reason")
            self._end = StreamAborted(reason if isinstance(reason, str) else "aborted")
        self._wake.set()

    def _lost(self, reason: str) -> None:
        self._end = ConnectionLostError(reason)
        self._wake.set()

    def __aiter__(self) -> StreamReader:
        return self

    async def __anext__(self) -> bytes:
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._consumed += len(chunk)
                self.bytes_read += len(chunk)
                if self._consumed >= self.window // 2:
                    self._grant()
                return chunk
            if self._end is not None:
                raise self._end
            if self._closed:
                raise StopAsyncIteration
            self._wake.clear()
            await self._wake.wait()

    def _grant(self) -> None:
        n, self._consumed = self._consumed, 0
        fut = self.client._rooms.request(
            {"op": "stream.credit", "stream_id": self.stream_id, "bytes": n}, None
        )
        # Fire and forget: a grant to a stream that just ended is not_found, harmlessly.
        fut.add_done_callback(_ignore)

    async def read_all(self) -> bytes:
        """Every chunk joined (for small streams)."""
        return b"".join([c async for c in self])

    async def close(self) -> None:
        """Ends the stream from the reading side (the writer gets ``stream_closed``)."""
        self.client._rooms.unroute(self.stream_id)
        self._closed = True
        self._wake.set()
        await self.client._room_request({"op": "stream.close", "stream_id": self.stream_id}, None)


def _ignore(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()

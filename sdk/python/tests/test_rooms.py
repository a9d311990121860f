"""Rooms and streams (PROTOCOL.md §8) against a real ``herald serve``: presence, direct
messages with binary attachments, broadcast, leave, credit-paced streams, errors; plus the
pure binary-frame codec and the routing of room frames out of the socket."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from pathlib import Path
from typing import Any, TypeVar

import pytest

import herald
from conftest import TIMEOUT, Clients, HeraldServer, within
from herald.rooms import RoomDriver, encode_binary, parse_binary

R = TypeVar("R", bound=herald.RoomEvent)


async def next_room(stream: herald.EventStream, cls: type[R], pred: Any = None) -> R:
    """The next room event of type ``cls`` (matching ``pred``) within TIMEOUT."""

    async def find() -> R:
        async for ev in stream:
            if isinstance(ev, cls) and (pred is None or pred(ev)):
                return ev
        raise AssertionError(f"room stream ended before a {cls.__name__}")

    return await asyncio.wait_for(find(), TIMEOUT)


async def lobby(connect: Clients, *users: str) -> list[herald.Client]:
    """Clients of ``users``; the first creates channel ``lobby``, the others join it."""
    clients = [await connect(u) for u in users]
    await within(clients[0].create_channel("lobby"))
    for c in clients[1:]:
        await within(c.join("lobby"))
    return clients


# -- pure -------------------------------------------------------------------------------


def test_binary_frames_round_trip_and_refuse_bad_lengths() -> None:
    frame = encode_binary({"id": 7, "op": "room.send"}, b"\x00\xffbytes")
    header, data = parse_binary(frame)
    assert header == {"id": 7, "op": "room.send"}
    assert data == b"\x00\xffbytes"
    with pytest.raises(herald.ProtocolError):
        parse_binary(b"\x00\x00\x10\x00{}")  # the length runs past the frame
    with pytest.raises(herald.ProtocolError):
        parse_binary(b"\x00\x00\x00\x02[]")  # not an object
    with pytest.raises(herald.ProtocolError):
        parse_binary(b"\x00\x00")


async def test_the_driver_takes_room_frames_and_leaves_the_rest_to_the_session() -> None:
    sent: list[str | bytes] = []

    def send(frame: str | bytes) -> bool:
        sent.append(frame)
        return True

    driver = RoomDriver(send)
    fut = driver.request({"op": "room.leave", "channel": "c"}, None)
    assert isinstance(sent[0], str)
    rid = int(sent[0].split(",")[0].split(":")[1])
    assert not driver.handle_text('{"id":3,"ok":{}}')  # a session reply
    assert not driver.handle_text('{"event":"message","channel":"c"}')
    assert driver.handle_text('{"event":"stream_credit","stream_id":"s","bytes":5}')
    assert driver.handle_text(f'{{"id":{rid},"ok":{{}}}}')
    assert await fut == {}
    # A binary request goes out as one binary frame carrying the request as its header.
    driver.request({"op": "stream.chunk", "stream_id": "s"}, b"abc")
    header, data = parse_binary(sent[1])  # type: ignore[arg-type]
    assert header["op"] == "stream.chunk"
    assert data == b"abc"
    # Offline: a room request fails at once instead of waiting for a later connection.
    offline = RoomDriver(lambda f: False)
    with pytest.raises(herald.ConnectionLostError):
        await offline.request({"op": "room.leave", "channel": "c"}, None)


# -- against the server -----------------------------------------------------------------


async def test_participants_see_each_other_with_attributes(connect: Clients) -> None:
    ada, bob = await lobby(connect, "ada", "bob")
    ada_room = ada.room("lobby")
    ada_events = ada_room.messaging.events()
    added: list[herald.ParticipantAdded] = []
    ada_room.messaging.on("participant_added", added.append)
    await within(ada_room.enter({"role": "host"}))
    assert ada_room.participant_id is not None
    assert ada_room.remote_participants == {}

    bob_room = await within(bob.room("lobby").enter({"role": "guest"}))
    assert bob_room.participant_id is not None
    assert set(bob_room.remote_participants) == {ada_room.participant_id}
    seen = bob_room.remote_participants[ada_room.participant_id]
    assert (seen.user, seen.attributes) == ("ada", {"role": "host"})

    ev = await next_room(ada_events, herald.ParticipantAdded)
    assert ev.participant.participant_id == bob_room.participant_id
    assert ev.participant.user == "bob"
    assert ev.participant.attributes == {"role": "guest"}
    assert [a.participant.user for a in added] == ["bob"]  # the callback heard it too
    assert set(ada_room.remote_participants) == {bob_room.participant_id}
    listed = await within(ada_room.participants())
    assert {p.user for p in listed} == {"ada", "bob"}

    await within(bob_room.update({"role": "speaker"}))
    upd = await next_room(ada_events, herald.ParticipantUpdated)
    assert upd.participant.attributes == {"role": "speaker"}
    assert ada_room.remote_participants[upd.participant.participant_id].attributes == {
        "role": "speaker"
    }


async def test_a_direct_message_with_an_attachment_reaches_only_its_addressee(
    connect: Clients,
) -> None:
    ada, bob, cat = await lobby(connect, "ada", "bob", "cat")
    rooms = [c.room("lobby") for c in (ada, bob, cat)]
    streams = [r.messaging.events() for r in rooms]
    for r in rooms:
        await within(r.enter())
    a, b, _ = rooms
    assert b.participant_id is not None
    assert a.participant_id is not None
    attachment = os.urandom(1024 * 1024) + bytes(range(256))
    await within(a.messaging.send_message(b.participant_id, "file", {"name": "x"}, attachment))
    got = await next_room(streams[1], herald.RoomMessage)
    assert got.attachment == attachment  # byte-identical
    assert (got.type, got.message, got.sender.user) == ("file", {"name": "x"}, "ada")
    assert got.sender.participant_id == a.participant_id
    # cat's first room message is the broadcast sent after the DM: the DM never reached it.
    await within(a.messaging.broadcast_message("note", {"after": "dm"}))
    first = await next_room(streams[2], herald.RoomMessage)
    assert (first.type, first.message, first.attachment) == ("note", {"after": "dm"}, None)
    # Text direct message without an attachment.
    await within(b.messaging.send_message(a.participant_id, "chat", {"text": "thanks"}))
    reply = await next_room(streams[0], herald.RoomMessage)
    assert (reply.type, reply.message, reply.attachment) == ("chat", {"text": "thanks"}, None)


async def test_broadcast_reaches_every_other_participant_not_the_sender(
    connect: Clients,
) -> None:
    ada, bob, cat = await lobby(connect, "ada", "bob", "cat")
    rooms = [c.room("lobby") for c in (ada, bob, cat)]
    streams = [r.messaging.events() for r in rooms]
    for r in rooms:
        await within(r.enter())
    a, b, _ = rooms
    assert a.participant_id is not None
    blob = b"\x01" * 70_000
    await within(a.messaging.broadcast_message("hello", {"n": 1}, blob))
    for s in streams[1:]:
        m = await next_room(s, herald.RoomMessage)
        assert (m.type, m.message, m.attachment, m.sender.user) == ("hello", {"n": 1}, blob, "ada")
    # The sender's first room message is bob's later DM, not its own broadcast.
    await within(b.messaging.send_message(a.participant_id, "ack", {}))
    m = await next_room(streams[0], herald.RoomMessage)
    assert (m.type, m.sender.user) == ("ack", "bob")


async def test_leave_and_disconnect_remove_the_participant(connect: Clients) -> None:
    ada, bob, cat = await lobby(connect, "ada", "bob", "cat")
    a = ada.room("lobby")
    events = a.messaging.events()
    removed: list[herald.ParticipantRemoved] = []
    a.messaging.on("participant_removed", removed.append)
    await within(a.enter())
    b = await within(bob.room("lobby").enter())
    c = await within(cat.room("lobby").enter())
    await next_room(events, herald.ParticipantAdded, lambda e: e.participant.user == "cat")
    bob_id = b.participant_id
    await within(b.leave())
    gone = await next_room(events, herald.ParticipantRemoved)
    assert gone.participant.participant_id == bob_id
    assert gone.participant.user == "bob"
    assert b.participant_id is None
    assert {p.user for p in a.remote_participants.values()} == {"cat"}
    # A message to the participant that left is not_found.
    with pytest.raises(herald.NotFoundError):
        await within(a.messaging.send_message(gone.participant.participant_id, "x", {}))
    await cat.close()
    gone = await next_room(events, herald.ParticipantRemoved)
    assert gone.participant.user == "cat"
    assert a.remote_participants == {}
    assert [r.participant.user for r in removed] == ["bob", "cat"]
    assert c.participant_id is None  # a closed client is no participant any more


async def test_a_20_mib_stream_to_a_slow_reader_is_identical_and_paces_the_writer(
    connect: Clients,
) -> None:
    ada, bob = await lobby(connect, "ada", "bob")
    a = await within(ada.room("lobby").enter())
    b_room = bob.room("lobby")
    requests = b_room.messaging.stream_requests()
    b = await within(b_room.enter())
    assert b.participant_id is not None
    data = os.urandom(20 * 1024 * 1024)
    window = 256 * 1024
    received = hashlib.sha256()
    read = 0
    max_ahead = 0

    async def read_slowly() -> herald.StreamReader:
        nonlocal read, max_ahead
        request = await asyncio.wait_for(requests.__anext__(), TIMEOUT)
        assert request.header == {"name": "big.bin"}
        assert request.sender.user == "ada"
        reader = await request.accept(credit=window)
        async for chunk in reader:
            received.update(chunk)
            read += len(chunk)
            # The writer is never more than the window ahead of what was consumed.
            max_ahead = max(max_ahead, writer_box[0].bytes_written - read if writer_box else 0)
            await asyncio.sleep(0.002)  # a slow consumer, not a wait for an event
        return reader

    writer_box: list[herald.StreamWriter] = []
    reading = asyncio.create_task(read_slowly())
    writer = await within(
        a.messaging.create_stream(to=b.participant_id, header={"name": "big.bin"})
    )
    writer_box.append(writer)
    for i in range(0, len(data), 1024 * 1024):
        await asyncio.wait_for(writer.write(data[i : i + 1024 * 1024]), 60)
    await within(writer.close())
    reader = await asyncio.wait_for(reading, 120)
    assert read == len(data)
    assert received.digest() == hashlib.sha256(data).digest()  # byte-identical
    assert reader.bytes_read == len(data)
    # Paced: the writer ran out of credit and waited for the reader many times.
    assert writer.credit_waits >= len(data) // window // 2, writer.credit_waits
    assert writer.credit_wait_seconds > 0
    assert max_ahead <= window + 64 * 1024


async def test_a_rejected_stream_and_a_reader_that_leaves(connect: Clients) -> None:
    ada, bob = await lobby(connect, "ada", "bob")
    a = await within(ada.room("lobby").enter())
    b_room = bob.room("lobby")
    b_room.messaging.on("stream_request", lambda r: r.reject())
    b = await within(b_room.enter())
    assert b.participant_id is not None
    with pytest.raises(herald.ForbiddenError):
        await within(a.messaging.create_stream(to=b.participant_id, header={}))
    with pytest.raises(herald.NotFoundError):
        await within(a.messaging.create_stream(to="no-such-participant", header={}))


async def test_room_errors_carry_their_codes(server: HeraldServer, connect: Clients) -> None:
    (ada,) = await lobby(connect, "ada")
    eve = await connect("eve")
    channel_id = (await within(ada.channel("lobby"))).id
    with pytest.raises(herald.ForbiddenError):  # not a member
        await within(eve.room(channel_id).enter())
    a = ada.room("lobby")
    with pytest.raises(herald.ForbiddenError):  # not entered
        await within(a.messaging.broadcast_message("x", {}))
    await within(a.enter())
    with pytest.raises(herald.PayloadTooLargeError):
        await within(a.enter({"big": "x" * 5000}))
    with pytest.raises(ValueError, match="unknown room event"):
        a.messaging.on("nope", print)


async def test_an_attachment_over_the_limit_is_payload_too_large(tmp_path: Path) -> None:
    server = HeraldServer(tmp_path / "data", ["--max-attachment-bytes", "1024"])
    server.start()
    try:
        clients = Clients(server)
        try:
            ada, bob = await lobby(clients, "ada", "bob")
            a = await within(ada.room("lobby").enter())
            b = await within(bob.room("lobby").enter())
            assert b.participant_id is not None
            await within(a.messaging.send_message(b.participant_id, "ok", {}, b"x" * 1024))
            with pytest.raises(herald.PayloadTooLargeError):
                await within(a.messaging.send_message(b.participant_id, "big", {}, b"x" * 1025))
        finally:
            for c in clients.made:
                await c.close()
    finally:
        server.stop()


async def test_a_restart_ends_room_membership_and_streams_with_connection_lost(
    server: HeraldServer, connect: Clients
) -> None:
    ada, bob = await lobby(connect, "ada", "bob")
    a_room = ada.room("lobby")
    disconnected: list[herald.RoomDisconnected] = []
    a_room.messaging.on("disconnected", disconnected.append)
    a = await within(a_room.enter())
    b_room = bob.room("lobby")
    requests = b_room.messaging.stream_requests()
    b = await within(b_room.enter())
    assert b.participant_id is not None

    async def accept() -> herald.StreamReader:
        request = await asyncio.wait_for(requests.__anext__(), TIMEOUT)
        return await request.accept(credit=1024)

    accepting = asyncio.create_task(accept())
    writer = await within(a.messaging.create_stream(to=b.participant_id))
    reader = await within(accepting)
    await within(writer.write(b"y" * 1024))
    assert await within(reader.__anext__()) == b"y" * 1024
    events = ada.events()
    server.restart()
    # A draining server aborts the streams before closing; either way both sides end.
    gone = (herald.ConnectionLostError, herald.StreamAborted)
    with pytest.raises(gone):
        await within(writer.write(b"z" * 4096))  # the credit ran out, then the stream went
    with pytest.raises(gone):
        await within(reader.__anext__())
    assert a.participant_id is None
    assert [d.channel for d in disconnected] == [a.channel_id]
    # After the reconnect, entering again works.

    async def reconnected() -> None:
        dropped = False
        async for ev in events:  # this stream starts with the backlog since connect
            if isinstance(ev, herald.Disconnected):
                dropped = True
            elif isinstance(ev, herald.Connected) and dropped:
                return

    await within(reconnected())
    await within(a.enter())
    assert a.participant_id is not None


def test_the_sync_facade_enters_sends_and_streams(server: HeraldServer) -> None:
    from herald.sync import connect as sync_connect

    with (
        sync_connect(server.url, server.token("ada")) as ada,
        sync_connect(server.url, server.token("bob")) as bob,
    ):
        ada.create_channel("lobby")
        bob.join("lobby")
        a = ada.room("lobby").enter({"who": "ada"})
        b_room = bob.room("lobby")
        b_events = b_room.messaging.events()
        b = b_room.enter()
        assert b.participant_id is not None
        assert [p.user for p in b.remote_participants.values()] == ["ada"]
        a.messaging.send_message(b.participant_id, "hi", {"text": "hello"}, b"\x00\x01")
        while True:
            ev = b_events.next(TIMEOUT)
            if isinstance(ev, herald.RoomMessage):
                break
        assert (ev.type, ev.message, ev.attachment) == ("hi", {"text": "hello"}, b"\x00\x01")
        assert a.participant_id is not None
        # A stream: ada writes on a thread of her own (write blocks for credit) while bob
        # accepts and reads here.
        payload = os.urandom(50_000)
        errors: list[BaseException] = []

        def write_all() -> None:
            try:
                assert b.participant_id is not None
                writer = a.messaging.create_stream(b.participant_id, {"n": 1})
                writer.write(payload)
                writer.close()
            except BaseException as e:
                errors.append(e)

        thread = threading.Thread(target=write_all)
        thread.start()
        while True:
            ev = b_events.next(TIMEOUT)
            if isinstance(ev, herald.StreamRequest):
                break
        assert ev.header == {"n": 1}
        reader = b_room.messaging.accept(ev, credit=4096)
        assert reader.read_all() == payload
        thread.join(TIMEOUT)
        assert errors == []


async def test_past_the_list_limit_a_room_sends_counts(tmp_path: Path) -> None:
    server = HeraldServer(tmp_path / "data", ["--presence-list-max", "2"])
    server.start()
    try:
        clients = Clients(server)
        try:
            ada, bob, cat = await lobby(clients, "ada", "bob", "cat")
            a_room = ada.room("lobby")
            counts = a_room.messaging.events()
            a = await within(a_room.enter())
            await within(bob.room("lobby").enter())
            c = await within(cat.room("lobby").enter())
            # cat's enter made three: its reply is a count, not a list.
            assert c.count == 3
            assert c.remote_participants == {}
            ev = await next_room(counts, herald.PresenceCount)
            assert (ev.channel, ev.count) == (a.channel_id, 3)
            assert a.count == 3
            listed = await within(c.participants(page=2))  # paged two at a time
            assert sorted(p.user for p in listed) == ["ada", "bob", "cat"]
        finally:
            for cl in clients.made:
                await cl.close()
    finally:
        server.stop()

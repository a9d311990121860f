"""Reconnect and resume across a real server restart: no gap, no duplicate (PROTOCOL.md §4,
the same cases as the Rust SDK's crates/client/tests/server.rs)."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import herald
from conftest import Clients, HeraldServer, next_of, within

SLOW = herald.ClientConfig(
    backoff_initial=1.0, backoff_max=1.0, backoff_jitter=0.0, request_timeout=15
)


async def test_restart_loses_nothing_and_duplicates_nothing(
    server: HeraldServer, connect: Clients
) -> None:
    # Ada comes back a second after the restart, so Bob's first messages after it are
    # posted while she is away and reach her only through the resume replay.
    ada = await connect("ada", SLOW)
    events = ada.events()
    ch = await within(ada.create_channel("durable"))
    bob = await connect("bob")
    bobs = await within(bob.join("durable"))
    sent = [(await within(ch.send(f"before {i}"))).id for i in range(3)]
    # A subscription must survive the restart too.
    lobby = await within(ada.subscribe("lobby"))

    await asyncio.to_thread(server.restart)

    # Bob's sends wait for his reconnect; each is appended once.
    sent += [(await within(bobs.send(f"after {i}"))).id for i in range(3)]
    late = await connect("bob")
    lates = await within(late.join("durable"))
    sent.append((await within(lates.send("from a new client"))).id)

    got: list[herald.Message] = []
    reconnected = False

    def note(ev: herald.Event) -> None:
        nonlocal reconnected
        reconnected = reconnected or (isinstance(ev, herald.Connected) and bool(got))

    while len(got) < len(sent):
        got.append((await next_of(events, herald.MessageEvent, skip=note)).message)
    assert reconnected, "the restart dropped the connection and the client came back"
    assert [m.id for m in got] == sent, "every message once, in order"
    assert all(a.seq < b.seq for a, b in itertools.pairwise(got))

    # The subscription was renewed after the reconnect. The renewal is sent right after
    # `connect` is answered, before any request of the user's, and the server answers in
    # order: once a ping made now is answered, the renewed subscription is in force.
    await within(ada.ping())
    await within(late.publish("lobby", 1))
    assert (await within(lobby.next())).data == 1

    # Nothing more (no duplicate) is pending on the stream: a fresh message comes next.
    last = await within(ch.send("last"))
    assert (await next_of(events, herald.MessageEvent)).message.id == last.id


async def test_quiet_channel_gets_the_first_message_after_a_restart_exactly_once(
    server: HeraldServer, connect: Clients
) -> None:
    creator = await connect("ada")
    quiet = await within(creator.create_channel("quiet"))
    bob = await connect("bob")
    bobs = await within(bob.join("quiet"))
    await creator.close()

    # A new session of Ada's, a member of `quiet` that sees no event of it this session. She
    # comes back a second after the restart, so Bob's message lands while she is away.
    ada = await connect("ada", SLOW)
    events = ada.events()
    assert ada.resume_points() == {quiet.id: quiet.data.last_seq + 1}, "seeded by channel.list"

    await asyncio.to_thread(server.restart)
    first = await within(bobs.send("first after the restart"))
    ev = await next_of(events, herald.MessageEvent)
    assert (ev.channel, ev.message.id) == (quiet.id, first.id)
    # Exactly once: the next message on the stream is the next one sent.
    second = await within(bobs.send("second"))
    assert (await next_of(events, herald.MessageEvent)).message.id == second.id


async def test_a_request_in_flight_during_a_restart_fails_or_is_resent(
    server: HeraldServer, connect: Clients
) -> None:
    ada = await connect("ada")
    ch = await within(ada.create_channel("inflight"))
    events = ada.events()
    await asyncio.to_thread(server.stop)
    # Made while the server is down: queued, sent after the reconnect, appended once.
    pending = asyncio.ensure_future(ch.send("while down", client_id="down-1"))
    await next_of(events, herald.Disconnected)
    await asyncio.to_thread(server.start)
    m = await within(pending)
    assert m.content == "while down"
    page = await within(ch.history(limit=10))
    assert [x.id for x in page.messages if x.client_id == "down-1"] == [m.id]


async def test_a_truncated_replay_is_announced_and_the_hole_pages_verified(
    tmp_path: Path,
) -> None:
    server = HeraldServer(tmp_path / "data", ["--replay-cap", "2"])
    server.start()
    clients = Clients(server)
    try:
        ada = await clients("ada", SLOW)
        events = ada.events()
        ch = await within(ada.create_channel("busy"))
        bob = await clients("bob")
        bobs = await within(bob.join("busy"))
        joined = await next_of(events, herald.MemberJoined, lambda e: e.user == "bob")

        await asyncio.to_thread(server.restart)
        # Five entries while Ada is away; the server replays only the newest two.
        sent = [await within(bobs.send(f"missed {i}")) for i in range(5)]
        truncated = await next_of(events, herald.ResumeTruncated)
        assert (truncated.channel, truncated.from_seq) == (ch.id, sent[3].seq)
        replayed = [(await next_of(events, herald.MessageEvent)).message.id for _ in range(2)]
        assert replayed == [m.id for m in sent[3:]]
        # The hole pages over the log, verified against the head Ada had before it.
        hole = await within(ch.log(joined.seq, 3))
        assert [e.seq for e in hole.entries] == [m.seq for m in sent[:3]]
        page = await within(ch.history(after=joined.seq, limit=3))
        assert [m.id for m in page.messages] == [m.id for m in sent[:3]]
    finally:
        for c in clients.made:
            await c.close()
        server.stop()

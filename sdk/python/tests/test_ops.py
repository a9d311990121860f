"""Every op of PROTOCOL.md §4 (and auth.refresh, docs/protocol.md §A), the REST routes the
SDK uses, and the errors by code, against a real ``herald serve`` over its sockets."""

from __future__ import annotations

import asyncio

import blake3
import pytest

import herald
from conftest import TIMEOUT, Clients, HeraldServer, fast, next_of, within


async def test_connect_tells_the_user_and_refuses_bad_tokens(
    server: HeraldServer, connect: Clients
) -> None:
    ada = await connect("ada")
    assert ada.user.id == "ada"
    assert ada.conn_id
    await within(ada.ping())
    with pytest.raises(herald.UnauthorizedError):
        await within(herald.Client.connect(server.url, "not-a-token", config=fast()))
    # A token signed with another secret.
    forged = server.token("ada")[:-4] + "AAAA"
    with pytest.raises(herald.UnauthorizedError):
        await within(herald.Client.connect(server.url, forged, config=fast()))


async def test_connect_to_nothing_fails_at_once() -> None:
    with pytest.raises(herald.ConnectError):
        await within(herald.Client.connect("http://127.0.0.1:9", "t", config=fast()))
    with pytest.raises(ValueError, match="expected http"):
        await herald.Client.connect("127.0.0.1:7700", "t")


async def test_subscribe_publish_unsubscribe(connect: Clients) -> None:
    ada, bob = await connect("ada"), await connect("bob")
    events = ada.events()
    lobby = await within(ada.subscribe("lobby"))
    other = await within(ada.subscribe("other"))
    await within(bob.publish("lobby", {"x": 1}))
    p = await lobby.next(TIMEOUT)
    assert (p.subject, p.sender, p.data) == ("lobby", "bob", {"x": 1})
    await lobby.unsubscribe()
    # After the unsubscribe the server sends nothing of lobby: the next publication that
    # reaches ada (same publisher, same order) is the one on `other`.
    await next_of(events, herald.Publication)
    await within(bob.publish("lobby", {"x": 2}))
    await within(bob.publish("other", "o"))
    got = await next_of(events, herald.Publication)
    assert (got.subject, got.data) == ("other", "o")
    assert (await other.next(TIMEOUT)).data == "o"
    # Another user's inbox is refused; a subject with a space is not a name.
    with pytest.raises(herald.ForbiddenError):
        await within(ada.subscribe("user:bob"))
    with pytest.raises(herald.InvalidNameError):
        await within(ada.subscribe("a b"))
    mine = await within(ada.subscribe("user:ada"))
    await mine.unsubscribe()


async def test_channel_lifecycle(connect: Clients) -> None:
    ada, bob = await connect("ada"), await connect("bob")
    ada_events, bob_events = ada.events(), bob.events()
    ch = await within(ada.create_channel("project-x", title="Project X"))
    assert (ch.name, ch.data.title, ch.data.policy) == ("project-x", "Project X", "open")
    created = await next_of(ada_events, herald.ChannelCreated, lambda e: e.channel == ch.id)
    assert created.name == "project-x"
    again = await within(ada.create_channel("project-x"))
    assert again.id == ch.id, "a second create of one's own name is a join"
    with pytest.raises(herald.NameTakenError):
        await within(bob.create_channel("project-x"))
    with pytest.raises(herald.InvalidNameError):
        await within(bob.create_channel("Not A Name"))

    joined = await within(bob.join("project-x"))
    assert joined.id == ch.id
    ev = await next_of(ada_events, herald.MemberJoined, lambda e: e.user == "bob")
    assert ev.by == "bob"
    assert {e.name for e in await within(bob.directory())} >= {"project-x"}
    listed = {c.id: c for c in await within(bob.list_channels())}
    assert listed[ch.id].last_seq == ev.seq

    info = await within(ch.info())
    assert {m.user for m in info.members} == {"ada", "bob"}
    await within(ch.remove_member("bob"))
    left = await next_of(bob_events, herald.MemberLeft, lambda e: e.user == "bob")
    assert left.by == "ada"
    with pytest.raises(herald.ForbiddenError):
        await within(bob.channel(ch.id))
    await within(ch.add_member("bob"))
    await next_of(bob_events, herald.MemberJoined, lambda e: e.user == "bob" and e.by == "ada")
    bobs = await within(bob.channel("project-x"))
    await within(bobs.leave())
    await next_of(ada_events, herald.MemberLeft, lambda e: e.user == "bob" and e.by == "bob")

    with pytest.raises(herald.ChannelNotFoundError):
        await within(bob.join("no-such-channel"))
    invite = await within(ada.create_channel("inner", policy="invite", members=["carol"]))
    with pytest.raises(herald.ForbiddenError):
        await within(bob.join("inner"))
    carol = await connect("carol")
    assert invite.id in {c.id for c in await within(carol.list_channels())}

    await within(bob.join("project-x"))
    with pytest.raises(herald.ForbiddenError):
        await within(bob.delete_channel(ch.id))
    await within(ch.delete())
    gone = await next_of(bob_events, herald.ChannelDeleted, lambda e: e.channel == ch.id)
    assert gone.name == "project-x"
    with pytest.raises(herald.ChannelNotFoundError):
        await within(ada.channel(ch.id))


async def test_messages_edits_deletes_reactions_reads(connect: Clients) -> None:
    ada, bob = await connect("ada"), await connect("bob")
    bob_events = bob.events()
    ch = await within(ada.create_channel("talk"))
    bobs = await within(bob.join("talk"))

    first = await within(ch.send("hello"))
    got = await next_of(bob_events, herald.MessageEvent, lambda e: e.message.id == first.id)
    assert (got.message.content, got.message.author, got.message.type) == (
        "hello",
        "ada",
        "chat.text",
    )
    reply = await within(bobs.send('{"n": 1}', type="app.json", reply_to=first.id))
    assert reply.reply_to is not None
    assert reply.reply_to.id == first.id
    assert reply.type == "app.json"

    # Idempotency: the same client_id returns the first message and appends nothing.
    a = await within(ch.send("once", client_id="k-1"))
    b = await within(ch.send("once", client_id="k-1"))
    assert a.id == b.id
    assert a.seq == b.seq

    edited = await within(ch.edit(first.id, "hello, edited"))
    assert edited.content == "hello, edited"
    ev_edit = await next_of(bob_events, herald.MessageEdited)
    assert (ev_edit.message_id, ev_edit.content) == (first.id, "hello, edited")
    with pytest.raises(herald.NotAuthorError):
        await within(bobs.edit(first.id, "not mine"))

    rid = await within(bobs.react(first.id, "👍"))
    ev_r = await next_of(bob_events, herald.ReactionAdded)
    assert (ev_r.reaction_id, ev_r.message_id, ev_r.emoji) == (rid, first.id, "👍")
    with pytest.raises(herald.NotAuthorError):
        await within(ch.unreact(rid))
    page = await within(ch.history(limit=10))
    top = next(m for m in page.messages if m.id == first.id)
    assert top.reactions == [herald.Reaction(rid, "👍", "bob")]
    assert top.edited_at is not None
    await within(bobs.unreact(rid))
    ev_rd = await next_of(bob_events, herald.ReactionDeleted)
    assert ev_rd.reaction_id == rid

    await within(bobs.read(a.id))
    receipt = await next_of(bob_events, herald.MessageRead)
    assert (receipt.user, receipt.message_id) == ("bob", a.id)
    members = {m.user: m for m in (await within(ch.info())).members}
    assert members["bob"].last_read == a.seq

    await within(ch.typing())
    typing = await next_of(bob_events, herald.Typing)
    assert (typing.user, typing.is_typing) == ("ada", True)
    await within(ch.ephemeral("cursor", {"x": 3}))
    eph = await next_of(bob_events, herald.Ephemeral)
    assert (eph.sender, eph.subject, eph.data) == ("ada", "cursor", {"x": 3})

    await within(ch.delete_message(first.id))
    deleted = await next_of(bob_events, herald.MessageDeleted)
    assert deleted.message_id == first.id
    with pytest.raises(herald.NotAuthorError):
        await within(ch.delete_message(reply.id))
    ids = [m.id for m in (await within(ch.history())).messages]
    assert first.id not in ids
    assert reply.id in ids
    with pytest.raises(herald.NotFoundError):
        await within(ch.edit(first.id, "resurrect"))
    with pytest.raises(herald.InvalidNameError):
        await within(ch.edit("not-an-id", "x"))

    with pytest.raises(herald.PayloadTooLargeError):
        await within(ch.send("x" * (64 * 1024 + 1)))
    carol = await connect("carol")
    with pytest.raises(herald.ForbiddenError):
        await within(herald.Channel(carol, ch.data).send("not a member"))


async def test_history_pages_both_ways(connect: Clients) -> None:
    ada = await connect("ada")
    ch = await within(ada.create_channel("pages"))
    sent = [await within(ch.send(f"m{i}")) for i in range(7)]
    newest = await within(ch.history(limit=3))
    assert [m.content for m in newest.messages] == ["m6", "m5", "m4"]
    assert newest.has_more
    older = await within(ch.history(limit=3, before=newest.messages[-1].seq))
    assert [m.content for m in older.messages] == ["m3", "m2", "m1"]
    back = [m.content async for m in ch.iter_history(page=3)]
    assert back == [f"m{i}" for i in reversed(range(7))]
    forward = [m.content async for m in ch.iter_history(after=0, page=2)]
    assert forward == [f"m{i}" for i in range(7)]
    window = await within(ch.history(after=0, from_=sent[2].ts, to=sent[4].ts, limit=50))
    assert all(sent[2].ts <= m.ts <= sent[4].ts for m in window.messages)
    assert {"m2", "m3", "m4"} <= {m.content for m in window.messages}
    with pytest.raises(herald.BadRequestError):
        await within(ch.history(before=5, after=1))
    with pytest.raises(herald.BadRequestError):
        await within(ch.history(limit=0))


async def test_log_is_verified_and_matches_the_live_chain(connect: Clients) -> None:
    ada = await connect("ada")
    events = ada.events()
    ch = await within(ada.create_channel("chain"))
    for i in range(5):
        await within(ch.send(f"entry {i}"))
    last = await next_of(events, herald.MessageEvent, lambda e: e.message.content == "entry 4")
    page = await within(ch.log(0, 3))
    assert [e.seq for e in page.entries] == [1, 2, 3]
    assert page.has_more
    entries = [e async for e in ch.iter_log(0, page=2)]
    assert [e.seq for e in entries] == list(range(1, 8))
    assert entries[-1].hash == last.meta.hash, "the log and the live event are one chain"
    assert entries[0].kind == "channel_created"
    assert entries[0].content == "chain"
    # Anchored on this client's verified head where the page meets it.
    tail = await within(ch.log(last.seq - 1, 10))
    assert tail.entries[0].hash == last.meta.hash


async def test_blobs_round_trip(connect: Clients) -> None:
    ada, bob = await connect("ada"), await connect("bob")
    ch = await within(ada.create_channel("files"))
    data = bytes(range(256)) * 1000
    ref = await within(ch.put_blob(data))
    assert ref == herald.BlobRef(blake3.blake3(data).hexdigest(), len(data))
    assert await within(ch.get_blob(ref.blob_id)) == data
    with pytest.raises(herald.NotFoundError):
        await within(ch.get_blob("00" * 32))
    with pytest.raises(herald.ForbiddenError):
        await within(herald.Channel(bob, ch.data).get_blob(ref.blob_id))


async def test_auth_refresh_keeps_the_connection(server: HeraldServer, connect: Clients) -> None:
    ada = await connect("ada")
    fresh = server.token("ada", ttl="2h")
    expires = await within(ada.refresh_token(fresh))
    assert expires.endswith("Z")
    assert ada.token == fresh
    with pytest.raises(herald.UnauthorizedError):
        await within(ada.refresh_token(server.token("bob")))
    await within(ada.ping())


async def test_a_token_provider_refreshes_before_expiry(server: HeraldServer) -> None:
    calls: list[asyncio.Event] = [asyncio.Event() for _ in range(4)]
    count = 0

    async def provider() -> str:
        nonlocal count
        calls[min(count, 3)].set()
        count += 1
        return server.token("ada", ttl="3s")

    client = await within(herald.Client.connect(server.url, token_provider=provider, config=fast()))
    try:
        events = client.events()
        # Token 1 is fetched to connect; token 2 at 80% of its life and token 3 at 80% of
        # token 2's, by when token 1 has expired: the connection lived on past it.
        await within(calls[2].wait())
        await within(client.ping())
        seen: list[herald.Event] = []
        while True:
            try:
                seen.append(await events.next(0.01))
            except TimeoutError:
                break
        assert not any(isinstance(e, herald.Disconnected) for e in seen), seen
    finally:
        await client.close()


async def test_server_grant_posts_as_any_author_over_rest(
    server: HeraldServer, connect: Clients
) -> None:
    ada = await connect("ada")
    events = ada.events()
    ch = await within(ada.create_channel("bridge"))
    async with herald.RestClient(server.url, server.token("bot", grants=("server",))) as rest:
        m = await within(rest.post_message(ch.id, "from the backend", author="ada"))
        assert m.author == "ada"
        await within(rest.publish("user:ada", {"ping": True}))
        page = await within(rest.history(ch.id, limit=5))
        assert page.messages[0].id == m.id
        info = await within(rest.channel_info("bridge"))
        assert info.channel.id == ch.id
    got = await next_of(events, herald.MessageEvent, lambda e: e.message.id == m.id)
    assert got.message.content == "from the backend"


async def test_closed_client_refuses_requests(connect: Clients) -> None:
    ada = await connect("ada")
    events = ada.events()
    await ada.close()
    with pytest.raises(herald.ClosedError):
        await ada.ping()
    tail = [e async for e in events]
    assert isinstance(tail[-1], herald.Disconnected)


async def test_a_reader_that_falls_behind_gets_lagged_and_its_stream_ends(
    connect: Clients,
) -> None:
    ada = await connect("ada")
    ch = await within(ada.create_channel("firehose"))
    ada.events().close()  # the first stream takes the backlog since connect; not this one's
    small = herald.ClientConfig(event_buffer=3, request_timeout=TIMEOUT)
    bob = await connect("bob", small)
    await within(bob.join("firehose"))
    events = bob.events()
    other = bob.events()
    for i in range(6):
        await within(ch.send(f"burst {i}"))
    await within(bob.ping())  # every event of the burst has reached bob's client by now
    got = [e async for e in events]
    assert isinstance(got[-1], herald.Lagged)
    assert got[-1].capacity == 3
    assert len(got) <= 4, "at most the buffer, then Lagged: nothing grows without bound"
    # Another stream is independent; the client itself is unaffected.
    assert isinstance(await other.next(TIMEOUT), herald.Event)
    await within(bob.ping())


async def test_an_expired_token_without_provider_stops_the_client(
    server: HeraldServer,
) -> None:
    client = await within(
        herald.Client.connect(server.url, server.token("ada", ttl="2s"), config=fast())
    )
    try:
        events = client.events()
        gone = await next_of(events, herald.Disconnected)
        assert gone.reason == "unauthorized"
        with pytest.raises(herald.ClosedError):
            await client.ping()
    finally:
        await client.close()

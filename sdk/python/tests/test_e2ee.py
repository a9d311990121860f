"""End-to-end encryption in Python (``herald.e2ee``) against a real ``herald serve``: DMs
with one side offline, encrypted channels (members added and removed, tampering surfaced,
edits sealed, opened and checked), the ``Space`` API with a broken chain, files, the state
file and its lock, the sync facade.
The interop with the Rust SDK (the ``herald`` CLI as a process) is in test_e2ee_interop.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

import herald
import herald_crypto
from conftest import REPO, TIMEOUT, HeraldServer, fast, next_of, rewriting_proxy, within
from herald import e2ee
from herald.e2ee import E2ee, StateKey
from herald.sync_e2ee import connect as sync_connect

PASS = StateKey(passphrase="correct horse battery staple")


class Devices:
    """Opens E2EE clients for a test (each user's state file in the test's directory) and
    closes them after it."""

    def __init__(self, server: HeraldServer, dir: Path) -> None:
        self.server = server
        self.dir = dir
        self.open: list[E2ee] = []

    def state(self, user: str) -> Path:
        return self.dir / f"{user}.state"

    async def __call__(
        self, user: str, device: str | None = None, *, url: str | None = None
    ) -> E2ee:
        c = await within(
            E2ee.connect(
                url or self.server.url,
                self.server.token(user),
                state=self.state(user),
                key=PASS,
                device_id=device,
                config=fast(),
            )
        )
        self.open.append(c)
        return c

    async def close(self, c: E2ee) -> None:
        await c.close()
        self.open.remove(c)


@pytest.fixture
async def devices(server: HeraldServer, tmp_path: Path) -> AsyncIterator[Devices]:
    d = Devices(server, tmp_path)
    yield d
    for c in list(d.open):
        await c.close()


async def next_dm(stream: e2ee.DmStream) -> e2ee.Dm:
    got = await stream.next(TIMEOUT)
    assert isinstance(got, e2ee.Dm), f"not readable: {got}"
    return got


async def next_opened(
    it: AsyncIterator[e2ee.Opened], pred: Callable[[e2ee.Opened], bool] = lambda _: True
) -> e2ee.Opened:
    async def find() -> e2ee.Opened:
        async for o in it:
            if pred(o):
                return o
        raise AssertionError("stream ended")

    return await asyncio.wait_for(find(), TIMEOUT)


def grep(dir: Path, needle: bytes) -> bool:
    return any(p.is_file() and needle in p.read_bytes() for p in dir.rglob("*"))


async def test_dms_wait_in_the_inbox_and_are_read_once(
    devices: Devices, server: HeraldServer
) -> None:
    grace = await devices("grace", "grace-phone")
    await devices.close(grace)
    ada = await devices("ada", "ada-laptop")
    # Grace is offline: the DMs wait in her inbox.
    ids = await within(ada.send_dm("grace", "the eagle lands at dawn"))
    assert len(ids) == 1
    await within(ada.send_dm("grace", b"bring a torch"))

    grace = await devices("grace")
    assert grace.device_id == "grace-phone"
    stream = grace.dms()
    first = await next_dm(stream)
    assert (first.from_, first.from_device, first.text) == (
        "ada",
        "ada-laptop",
        "the eagle lands at dawn",
    )
    assert (await next_dm(stream)).payload == b"bring a torch"
    # Live, and the answer goes the other way on the session Grace's side created.
    await within(ada.send_dm("grace", "live one"))
    assert (await next_dm(stream)).text == "live one"
    back = ada.dms()
    await within(grace.send_dm("ada", "torch packed"))
    assert (await next_dm(back)).text == "torch packed"

    # Acknowledged after the state was saved: a restart reads nothing again.
    await devices.close(grace)
    grace = await devices("grace")
    inbox = await within(grace._rest.json("GET", "/v1/dm/inbox", params={"device": "grace-phone"}))
    assert inbox["dms"] == []
    await within(ada.send_dm("grace", "after the restart"))
    assert (await next_dm(grace.dms())).text == "after the restart"
    # Nothing in the clear, neither on the server's disk nor in the state files.
    assert not grep(server.data, b"eagle lands")
    for state in devices.dir.glob("*.state"):
        raw = state.read_bytes()
        assert b"bring a torch" not in raw
        assert b"grace-phone" not in raw


async def test_a_dm_reaches_the_senders_other_devices(server: HeraldServer, tmp_path: Path) -> None:
    opened: list[E2ee] = []
    try:
        for user, device in (("grace", "grace-phone"), ("ada", "ada-laptop"), ("ada", "ada-phone")):
            opened.append(
                await within(
                    E2ee.connect(
                        server.url,
                        server.token(user),
                        state=tmp_path / f"{device}.state",
                        key=PASS,
                        device_id=device,
                        config=fast(),
                    )
                )
            )
        grace, laptop, phone = opened
        ids = await within(laptop.send_dm("grace", "seen on every device"))
        assert len(ids) == 2  # Grace's phone and Ada's own phone, not the laptop itself
        for c in (grace, phone):
            dm = await next_dm(c.dms())
            assert (dm.from_, dm.from_device, dm.text) == (
                "ada",
                "ada-laptop",
                "seen on every device",
            )
    finally:
        for c in opened:
            await c.close()


class DroppingProxy:
    """A TCP proxy to the server that cuts the connection of any HTTP request naming
    ``needle`` while armed (a network failure at a chosen request); everything else, the
    WebSocket included, passes through byte for byte."""

    def __init__(self, upstream: str, needle: bytes) -> None:
        self.upstream = upstream
        self.needle = needle
        self.armed = False
        self.dropped = 0
        self.url = ""
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> DroppingProxy:
        host, port = self.upstream.rsplit(":", 1)

        async def pump(r: asyncio.StreamReader, w: asyncio.StreamWriter, up: bool) -> None:
            try:
                while data := await r.read(65536):
                    if up and self.armed and self.needle in data:
                        self.dropped += 1
                        break
                    w.write(data)
                    await w.drain()
            except ConnectionError:
                pass
            finally:
                w.close()

        async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
            sr, sw = await asyncio.open_connection(host, int(port))

            async def both() -> None:
                # Either direction ending ends the other: a cut request closes the
                # client's side too, as a dead network would.
                ups = asyncio.create_task(pump(cr, sw, True))
                downs = asyncio.create_task(pump(sr, cw, False))
                await asyncio.wait({ups, downs}, return_when=asyncio.FIRST_COMPLETED)
                cw.close()
                sw.close()
                for t in (ups, downs):
                    t.cancel()

            task = asyncio.create_task(both())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        self._server = await asyncio.start_server(handle, "127.0.0.1", 0)
        addr = self._server.sockets[0].getsockname()
        self.url = f"http://{addr[0]}:{addr[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()


async def test_a_dm_whose_handling_the_network_cut_is_read_on_the_next_connection(
    devices: Devices, server: HeraldServer
) -> None:
    grace = await devices("grace", "grace-phone")
    await devices.close(grace)
    ada = await devices("ada", "ada-laptop")
    [dm_id] = await within(ada.send_dm("grace", "kept for later"))
    # Grace reads her inbox through a proxy that cuts the one request handling the DM
    # needs: the lookup of Ada's devices (she has not pinned Ada yet).
    async with DroppingProxy(server.addr, b"GET /v1/keys/users/ada ") as proxy:
        grace = await devices("grace", url=proxy.url)
        proxy.armed = True
        got = await grace.dms().next(TIMEOUT)
        assert proxy.dropped == 1
        assert isinstance(got, e2ee.DmFailure), got
        assert (got.id, got.from_, got.from_device, got.transient) == (
            dm_id,
            "ada",
            "ada-laptop",
            True,
        )
        # Not acknowledged, not marked handled: still in the inbox.
        inbox = await within(
            grace._rest.json("GET", "/v1/dm/inbox", params={"device": "grace-phone"})
        )
        assert [d["id"] for d in inbox["dms"]] == [dm_id]
        await devices.close(grace)
    # The next connection (the network back) reads it, once.
    grace = await devices("grace")
    stream = grace.dms()
    dm = await next_dm(stream)
    assert (dm.id, dm.text) == (dm_id, "kept for later")
    await within(ada.send_dm("grace", "and the next"))
    assert (await next_dm(stream)).text == "and the next"


async def test_connect_with_a_token_provider(devices: Devices, server: HeraldServer) -> None:
    """``E2ee.connect(token_provider=…)``: asked once to connect (not twice in a row),
    then at 80% of each token's life; the connection and REST outlive the first token; a
    token of another user is refused, and the client connects again once the provider
    gives the right user's."""
    issued: list[str] = []
    wanted = asyncio.Event()
    want_calls = 0
    user = "ada"

    async def provider() -> str:
        token = server.token(user, ttl="3s")
        issued.append(token)
        if len(issued) >= want_calls:
            wanted.set()
        return token

    async def calls(n: int) -> None:
        nonlocal want_calls
        want_calls = n
        wanted.clear()
        if len(issued) >= n:
            return
        await within(wanted.wait())

    grace = await devices("grace", "grace-phone")
    ada = await within(
        E2ee.connect(
            server.url,
            token_provider=provider,
            state=devices.state("ada"),
            key=PASS,
            device_id="ada-laptop",
            config=fast(),
        )
    )
    try:
        assert len(issued) == 1
        assert ada.user == "ada"
        events = ada.client.events()
        # Two refreshes: by the second, the token ada connected with (3 s) has expired.
        await calls(3)

        async def refreshed() -> None:
            # The provider has answered; the auth.refresh carrying its token is answered
            # a round trip later.
            while ada.client.token != issued[2]:
                await ada.client.ping()

        await within(refreshed())
        await within(ada.send_dm("grace", "still here"))  # REST (key claim) and WebSocket
        assert (await next_dm(grace.dms())).text == "still here"
        assert not any(isinstance(e, herald.Disconnected) for e in drain(events))

        # A token of someone else is never used: the reconnect after a restart fails
        # while the provider gives bob's, and succeeds once it gives ada's again.
        user = "bob"
        before = len(issued)
        server.restart()
        await calls(before + 2)
        assert not ada.client.connected
        user = "ada"
        await within(wait_connected(events))
        assert ada.client.user.id == "ada"
        await within(ada.send_dm("grace", "back"))
    finally:
        await ada.close()


def drain(events: herald.EventStream) -> list[herald.Event]:
    """The events already waiting in ``events``, without waiting for more."""
    return list(events._items)


async def wait_connected(events: herald.EventStream) -> None:
    async for ev in events:
        if isinstance(ev, herald.Connected):
            return
    raise AssertionError("stream ended before Connected")


async def test_a_redelivered_dm_is_not_handled_twice(devices: Devices) -> None:
    grace = await devices("grace", "grace-phone")
    ada = await devices("ada", "ada-laptop")
    stream = grace.dms()
    await within(ada.send_dm("grace", "once"))
    dm = await next_dm(stream)
    # The same copy delivered again (as after a lost ack) is skipped: the next thing the
    # stream yields is the next message, not a second "once" nor a failure.
    raw = {"id": dm.id, "from": "ada", "from_device": "ada-laptop", "body": "{}", "ts": ""}
    stream._queue.append(raw)
    await within(ada.send_dm("grace", "twice"))
    assert (await next_dm(stream)).text == "twice"


async def test_an_undecryptable_dm_is_surfaced_not_dropped(devices: Devices) -> None:
    grace = await devices("grace", "grace-phone")
    ada = await devices("ada", "ada-laptop")
    stream = grace.dms()
    # A body that is no Olm message of any session: sent raw, around the SDK.
    body = json.dumps({"pre_key": False, "body": "AAAA"})
    await within(
        ada.client.request(
            "dm.send", to=[{"user": "grace", "device_id": "grace-phone", "body": body}]
        )
    )
    got = await stream.next(TIMEOUT)
    assert isinstance(got, e2ee.DmFailure)
    assert "no Olm session" in got.reason
    assert not got.transient


async def test_a_changed_identity_is_refused(devices: Devices) -> None:
    ada = await devices("ada", "ada-laptop")
    await devices.close(await devices("grace", "grace-phone"))
    listed = await within(ada.list_devices("grace"))
    assert ada._pin_all("grace", listed)[0]["device_id"] == "grace-phone"
    assert ada.pin_status("grace-phone") is False
    # What a lying key directory would show: the same device id with other keys.
    other = json.loads(herald_crypto.Device.generate("grace-phone").identity_keys_json())
    forged = [{**listed[0], "identity": other}]
    with pytest.raises(e2ee.IdentityChangedError):
        ada._pin_all("grace", forged)
    # The same device listed under another user is refused too.
    with pytest.raises(e2ee.IdentityChangedError):
        ada._pin_all("mallory", listed)
    # An out-of-band check with the wrong fingerprint is refused; the right one verifies.
    with pytest.raises(e2ee.FingerprintMismatchError):
        await within(ada.verify_device("grace", "grace-phone", "00" * 32))
    fp = e2ee.fingerprint(listed[0]["identity"])
    await within(ada.verify_device("grace", "grace-phone", fp))
    assert ada.pin_status("grace-phone") is True


async def test_a_changed_pin_blocks_sends_until_verified_out_of_band(devices: Devices) -> None:
    grace = await devices("grace", "grace-phone")
    ada = await devices("ada", "ada-laptop")
    stream = grace.dms()
    await within(ada.send_dm("grace", "first"))
    assert (await next_dm(stream)).text == "first"
    # Ada's pin is of other keys than the directory now shows (as after a reset of
    # Grace's device, or a lying server): every send to Grace is refused.
    real = ada._live.pins["grace-phone"].identity
    ada._live.pins["grace-phone"].identity = json.loads(
        herald_crypto.Device.generate("grace-phone").identity_keys_json()
    )
    with pytest.raises(e2ee.IdentityChangedError):
        await within(ada.send_dm("grace", "refused"))
    # Ada checks the fingerprint out of band: the pin is replaced, old sessions dropped.
    await within(ada.verify_device("grace", "grace-phone", e2ee.fingerprint(real)))
    assert ada.pin_status("grace-phone") is True
    assert "grace-phone" not in ada._live.sessions
    await within(ada.send_dm("grace", "after verification"))
    assert (await next_dm(stream)).text == "after verification"


async def test_the_state_file_is_sealed_locked_and_refuses_a_wrong_key(
    devices: Devices, server: HeraldServer
) -> None:
    ada = await devices("ada", "ada-laptop")
    path = devices.state("ada")
    raw = path.read_bytes()
    assert raw[:4] == b"HST1"
    assert raw[4] == 1
    assert path.stat().st_mode & 0o777 == 0o600
    # The container opens with herald-crypto and holds the Rust SDK's JSON shape.
    _, plain = herald_crypto.StateSealer.open(raw, passphrase="correct horse battery staple")
    state = json.loads(plain)
    assert set(state) == {
        "user",
        "device_id",
        "device",
        "sessions",
        "pins",
        "channels",
        "handled_dms",
    }
    assert state["device"].startswith("hdev1.")
    # One device, one process.
    with pytest.raises(e2ee.StateError, match="in use by another process"):
        await devices("ada")
    await devices.close(ada)
    with pytest.raises(e2ee.StateError, match="wrong passphrase"):
        await E2ee.connect(
            server.url, server.token("ada"), state=path, key=StateKey(passphrase="wrong")
        )
    with pytest.raises(e2ee.StateError, match="another kind of key"):
        await E2ee.connect(server.url, server.token("ada"), state=path, key=StateKey(key=b"k" * 32))
    with pytest.raises(e2ee.StateError, match="belongs to user 'ada'"):
        await E2ee.connect(server.url, server.token("grace"), state=path, key=PASS)
    altered = bytearray(raw)
    altered[-1] ^= 1
    path.write_bytes(bytes(altered))
    with pytest.raises(e2ee.StateError, match="altered"):
        await E2ee.connect(server.url, server.token("ada"), state=path, key=PASS)
    # A refused file is never replaced.
    assert path.read_bytes() == bytes(altered)


async def test_one_time_keys_are_topped_up(devices: Devices) -> None:
    grace = await devices("grace", "grace-phone")
    mine = (await within(grace.list_devices("grace")))[0]
    assert mine["one_time_keys"] == 50
    # Claims use keys up; the next start uploads new ones up to 50.
    for _ in range(30):
        await within(
            grace._rest.json(
                "POST",
                "/v1/keys/claim",
                json={"devices": [{"user": "grace", "device_id": "grace-phone"}]},
            )
        )
    assert (await within(grace.list_devices("grace")))[0]["one_time_keys"] == 20
    await devices.close(grace)
    grace = await devices("grace")
    assert (await within(grace.list_devices("grace")))[0]["one_time_keys"] == 50


async def test_an_encrypted_channel_between_python_members(
    devices: Devices, server: HeraldServer
) -> None:
    await devices.close(await devices("grace", "grace-phone"))
    ada = await devices("ada", "ada-laptop")
    ch = await within(ada.create_encrypted("plans", members=["grace"]))
    assert ch.epoch == 0
    assert {m["user"] for m in ch.members()} == {"ada", "grace"}
    await within(ch.send("sealed one"))
    grace = await devices("grace")
    gch = await within(grace.encrypted_channel("plans"))
    history = await within(gch.history())
    assert [o.text for o in history if isinstance(o, e2ee.OpenedMessage)] == ["sealed one"]
    # Live both ways.
    live = ch.messages()
    await within(gch.send("from grace", type="chat.text"))
    # (The stream starts with what arrived since connect: Ada's own message first.)
    got = await next_opened(live, lambda o: o.author == "grace")
    assert isinstance(got, e2ee.OpenedMessage)
    assert (got.author, got.device, got.text, got.type) == (
        "grace",
        "grace-phone",
        "from grace",
        "chat.text",
    )
    # The server stores only ciphertext.
    page = await within(ada.client.rest.log(ch.id, 0, 100))
    contents = [e.get("content") or "" for e in page["entries"]]
    assert any(c.startswith("hm1.") for c in contents)
    assert not grep(server.data, b"sealed one")

    # Removing Grace rotates: a new epoch whose key she never gets.
    await within(ch.remove_member("grace"))
    assert ch.epoch == 1
    assert {m["user"] for m in ch.members()} == {"ada"}
    after = await within(ch.send("after grace left"))
    opened = await within(gch.open(after))
    assert isinstance(opened, e2ee.Unopenable)
    assert opened.reason == e2ee.NO_KEY
    # Ada still reads everything, Grace's message included.
    texts = [o.text for o in await within(ch.history()) if isinstance(o, e2ee.OpenedMessage)]
    assert texts == ["sealed one", "from grace", "after grace left"]


async def test_an_added_member_reads_the_history(devices: Devices) -> None:
    ada = await devices("ada", "ada-laptop")
    grace = await devices("grace", "grace-phone")
    ch = await within(ada.create_encrypted("later"))
    await within(ch.send("before grace"))
    await within(ch.add_member("grace"))
    assert ch.epoch == 1
    gch = await within(grace.encrypted_channel("later"))
    texts = [o.text for o in await within(gch.history()) if isinstance(o, e2ee.OpenedMessage)]
    assert texts == ["before grace"]
    await within(gch.send("hello all"))
    texts = [o.text for o in await within(ch.history()) if isinstance(o, e2ee.OpenedMessage)]
    assert texts == ["before grace", "hello all"]


async def test_tampered_and_forged_messages_are_unopenable(devices: Devices) -> None:
    ada = await devices("ada", "ada-laptop")
    grace = await devices("grace", "grace-phone")
    ch = await within(ada.create_encrypted("ledger", members=["grace"]))
    good = await within(ch.send("pay alice 10"))
    # An altered ciphertext, sent around the SDK under Ada's name.
    body = good.content
    flipped = "A" if body[40] != "A" else "B"
    altered = body[:40] + flipped + body[41:]
    await within(ch.channel.send(altered, epoch=0))
    # Grace seals under her device but the message is not hers to claim: a well-formed
    # sealed message of a device that is no member's at that epoch.
    outsider = herald_crypto.Device.generate("mallory-1")
    key = ada._live.channels[ch.id].keyring.get(0)
    forged = herald_crypto.seal_message(outsider, ch.id, 0, key, b"pay mallory")
    await within(ch.channel.send(forged, epoch=0))
    await within(ch.channel.send("not sealed at all", epoch=0))
    gch = await within(grace.encrypted_channel("ledger"))
    history = await within(gch.history())
    assert len(history) == 4, "nothing dropped"
    assert isinstance(history[0], e2ee.OpenedMessage)
    assert history[0].text == "pay alice 10"
    reasons = [o.reason for o in history[1:] if isinstance(o, e2ee.Unopenable)]
    assert reasons == [e2ee.BAD_SIGNATURE, e2ee.NOT_MEMBER, e2ee.MALFORMED]


async def test_an_edit_in_an_encrypted_channel_is_sealed_and_opened(
    devices: Devices, server: HeraldServer
) -> None:
    ada = await devices("ada", "ada-laptop")
    bob = await devices("bob", "bob-phone")
    ch = await within(ada.create_encrypted("drafts", members=["bob"]))
    sent = await within(ch.send("first draft of the plan", type="chat.text"))
    gch = await within(bob.encrypted_channel("drafts"))
    live = gch.events()
    only_edits = gch.edits()
    raw = bob.client.events()

    edited = await within(ch.edit(sent.id, "the final plan"))
    assert (edited.id, edited.seq, edited.epoch) == (sent.id, sent.seq, 0)
    assert edited.edited_at is not None
    assert edited.content.startswith("hm1.")
    assert edited.content != sent.content

    # Bob sees it live, opened: the stream skips nothing (Ada's message first).
    first = await within(live.next(TIMEOUT))
    assert isinstance(first, e2ee.OpenedMessage)
    assert (first.id, first.text, first.edited_at) == (sent.id, "first draft of the plan", None)
    got = await within(live.next(TIMEOUT))
    assert isinstance(got, e2ee.OpenedEdit), got
    assert (got.message_id, got.author, got.device, got.epoch, got.text) == (
        sent.id,
        "ada",
        "ada-laptop",
        0,
        "the final plan",
    )
    assert got.edited_at == edited.edited_at
    assert await within(only_edits.next(TIMEOUT)) == got  # edits only: the message skipped
    event = await next_of(raw, herald.MessageEdited)
    assert got.seq == event.seq > sent.seq
    assert event.epoch == 0

    # History (both sides) opens the newest content, and says it was edited.
    for c in (ch, gch):
        [opened] = await within(c.history())
        assert isinstance(opened, e2ee.OpenedMessage), opened
        assert (opened.id, opened.seq, opened.author, opened.type, opened.text) == (
            sent.id,
            sent.seq,
            "ada",
            "chat.text",
            "the final plan",
        )
        assert opened.edited_at == edited.edited_at
        assert (opened.device, opened.epoch) == ("ada-laptop", 0)

    # The server has only ciphertext: REST history with Ada's token, its data directory.
    async with herald.RestClient(server.url, server.token("ada")) as rest:
        page = await within(rest.history(ch.id))
    [stored] = page.messages
    assert stored.id == sent.id
    assert stored.edited_at == edited.edited_at
    assert stored.content == edited.content
    assert stored.content.startswith("hm1.")
    assert "final plan" not in stored.content
    assert not grep(server.data, b"the final plan")
    assert not grep(server.data, b"first draft")

    # Only the author edits: Bob's sealed edit of Ada's message is refused, nothing changes.
    with pytest.raises(herald.NotAuthorError):
        await within(gch.edit(sent.id, "bob was here"))
    [still] = await within(gch.history())
    assert isinstance(still, e2ee.OpenedMessage)
    assert still.text == "the final plan"

    # An edit event whose content another member's device sealed (Bob's own message,
    # well formed, signed, under the right epoch) does not open as Ada's edit, live or as
    # the content of her message in history.
    bobs = await within(gch.send("bob's own words"))
    forged = dataclasses.replace(event, content=bobs.content)
    refused = await within(gch.open_edit(forged))
    assert isinstance(refused, e2ee.Unopenable), refused
    assert (refused.message_id, refused.seq, refused.author, refused.reason) == (
        sent.id,
        event.seq,
        "ada",
        e2ee.AUTHOR_MISMATCH,
    )
    assert refused.edited_at == event.edited_at
    as_history = dataclasses.replace(stored, content=bobs.content)
    in_history = await within(ch.open(as_history))
    assert isinstance(in_history, e2ee.Unopenable)
    assert (in_history.reason, in_history.edited_at) == (e2ee.AUTHOR_MISMATCH, edited.edited_at)
    # Sealed by a device of nobody in the roster, or not sealed at all.
    outsider = herald_crypto.Device.generate("mallory-1")
    key = ada._live.channels[ch.id].keyring.get(0)
    sealed = herald_crypto.seal_message(outsider, ch.id, 0, key, b"pay mallory")
    for content, reason in ((sealed, e2ee.NOT_MEMBER), ("plain words", e2ee.MALFORMED)):
        refused = await within(gch.open_edit(dataclasses.replace(event, content=content)))
        assert isinstance(refused, e2ee.Unopenable)
        assert refused.reason == reason
    # The real edit still opens from the same event.
    assert isinstance(await within(gch.open_edit(event)), e2ee.OpenedEdit)
    live.close()
    only_edits.close()


async def test_history_checks_an_edited_message_against_its_verified_edit(
    devices: Devices,
) -> None:
    ada = await devices("ada", "ada-laptop")
    ch = await within(ada.create_encrypted("checked"))
    sent = await within(ch.send("v1"))
    await within(ch.edit(sent.id, "v2"))
    await within(ch.edit(sent.id, "v3"))
    [m] = await within(ch.verified_messages())
    log_ = e2ee._VerifiedLog()
    await within(log_.read(ch.channel))
    assert log_.check(m) is None
    # What a server could show instead: the first content marked edited, an older edit,
    # or another author; each is refused by the check history runs.
    newest = log_.edits[sent.id]
    assert newest == (m.content, "ada")
    assert log_.check(dataclasses.replace(m, content=sent.content)) == (
        "differs from its newest verified edit"
    )
    assert "as its author" in (log_.check(dataclasses.replace(m, author="bob")) or "")
    assert log_.check(dataclasses.replace(m, seq=m.seq + 100)) == "is not in the verified log"
    unedited = dataclasses.replace(m, id="m-other", edited_at="2026-01-01T00:00:00Z")
    assert log_.check(unedited) == "is edited, but the verified log has no edit of it"
    # An edit made after the log was read: judged after reading on (anchored where the
    # first read ended), as verified_messages does.
    await within(ch.edit(sent.id, "v4"))
    [m4] = (await within(ch.channel.history(after=0))).messages
    assert log_.check(m4) == "differs from its newest verified edit"
    await within(log_.read(ch.channel))
    assert log_.check(m4) is None
    opened = await within(ch.history())
    assert [o.text for o in opened if isinstance(o, e2ee.OpenedMessage)] == ["v4"]


async def test_an_edit_after_a_rotation_it_missed_seals_again(devices: Devices) -> None:
    ada = await devices("ada", "ada-laptop")
    ch = await within(ada.create_encrypted("rotating"))
    sent = await within(ch.send("at epoch 0"))
    # Ada's view falls one commit behind (as when another admin rotated): her edit is
    # sealed at epoch 0, answered stale_epoch, synced and sealed again at epoch 1.
    c = ada._live.channels[ch.id]
    behind = c.chain.copy()
    await within(ch.rotate())
    c.chain = behind
    del c.commits[1]
    assert ch.epoch == 0
    edited = await within(ch.edit(sent.id, "at epoch 1"))
    assert (edited.epoch, ch.epoch) == (1, 1)
    [opened] = await within(ch.history())
    assert isinstance(opened, e2ee.OpenedMessage)
    assert (opened.text, opened.epoch, opened.seq) == ("at epoch 1", 1, sent.seq)


ORIGINAL_TAIL_LEN = 12


async def test_the_space_api_and_a_broken_chain(devices: Devices, server: HeraldServer) -> None:
    ada = await devices("ada", "ada-laptop")
    space = ada.space()
    first = await within(space.post_encrypted_message("general", "chat.text", {"text": "hi"}))
    await within(space.post_encrypted_message("general", "chat.text", [1, 2, 3]))
    msgs = await within(space.get_messages("general"))
    assert [m.type for m in msgs] == ["chat.text", "chat.text"]
    assert all(m.content.startswith("hm1.") for m in msgs)
    assert [await within(space.decrypt_message_data(m, "general")) for m in msgs] == [
        {"text": "hi"},
        [1, 2, 3],
    ]
    later = await within(space.get_messages("general", from_=first.seq))
    assert [m.id for m in later] == [msgs[1].id]
    with pytest.raises(herald.ChannelNotFoundError):
        await within(space.get_messages("nowhere"))
    await devices.close(ada)

    # The same topic through a man in the middle that rewrites the first sealed message:
    # the chain check refuses it before anything is decrypted.
    tail = first.content[-ORIGINAL_TAIL_LEN:].encode()
    forged = bytes(ord("A") if c != ord("A") else ord("B") for c in tail)
    async with rewriting_proxy(server.addr, tail, forged) as url:
        ada = await devices("ada", url=url)
        with pytest.raises(herald.ChainError):
            await within(ada.space().get_messages("general"))


async def test_encrypted_files(devices: Devices) -> None:
    ada = await devices("ada", "ada-laptop")
    grace = await devices("grace", "grace-phone")
    ch = await within(ada.create_encrypted("files", members=["grace"]))
    data = bytes(i % 251 for i in range(300_000))
    msg, manifest = await within(ch.put_file(data, "notes.bin"))
    assert msg.type == e2ee.FILE_TYPE
    assert len(manifest["shard_hashes"]) == 6
    gch = await within(grace.encrypted_channel("files"))
    opened = await within(gch.open(msg))
    assert isinstance(opened, e2ee.OpenedMessage)
    got_manifest = opened.file()
    assert got_manifest is not None
    assert got_manifest["name"] == "notes.bin"
    assert await within(gch.get_file(got_manifest)) == data
    # With too few shards the error says how many survive.
    gone = {**got_manifest, "shard_hashes": ["0" * 64] * 3 + got_manifest["shard_hashes"][3:]}
    with pytest.raises(e2ee.EncryptedChannelError, match="3 of 6 shards survive, 4 needed"):
        await within(gch.get_file(gone))


def test_the_sync_facade(server: HeraldServer, tmp_path: Path) -> None:
    with sync_connect(
        server.url, server.token("grace"), state=tmp_path / "g.state", key=PASS, device_id="g1"
    ) as grace:
        assert grace.device_id == "g1"
    with (
        sync_connect(
            server.url, server.token("ada"), state=tmp_path / "a.state", key=PASS, device_id="a1"
        ) as ada,
        sync_connect(
            server.url,
            token_provider=lambda: server.token("grace"),  # a plain function here
            state=tmp_path / "g.state",
            key=PASS,
        ) as grace,
    ):
        ada.send_dm("grace", "hello from a script")
        got = grace.dms().next(TIMEOUT)
        assert isinstance(got, e2ee.Dm)
        assert got.text == "hello from a script"
        space = ada.space()
        note = space.post_encrypted_message("notes", "note", {"n": 1})
        msgs = space.get_messages("notes")
        assert [space.decrypt_message_data(m, "notes") for m in msgs] == [{"n": 1}]
        ch = ada.encrypted_channel("notes")
        ch.add_member("grace")
        gch = grace.encrypted_channel("notes")
        opened: list[Any] = [o for o in gch.history() if isinstance(o, e2ee.OpenedMessage)]
        assert [json.loads(o.plaintext) for o in opened] == [{"n": 1}]
        # Edits, blocking: through the Space and the channel, live and in history.
        events = gch.events()
        edits = gch.edits()
        space.edit_encrypted_message("notes", note.id, {"n": 2})
        seen = events.next(TIMEOUT)
        assert isinstance(seen, e2ee.OpenedEdit), seen
        assert (seen.message_id, json.loads(seen.plaintext)) == (note.id, {"n": 2})
        ch.edit(note.id, b'{"n": 3}')
        seen = events.next(TIMEOUT)
        assert isinstance(seen, e2ee.OpenedEdit)
        assert seen.text == '{"n": 3}'
        events.close()
        both = [edits.next(TIMEOUT), edits.next(TIMEOUT)]
        assert [e.text for e in both if isinstance(e, e2ee.OpenedEdit)] == ['{"n":2}', '{"n": 3}']
        edits.close()
        [edited] = space.get_messages("notes")
        assert edited.edited_at is not None
        assert space.decrypt_message_data(edited, "notes") == {"n": 3}
        [o] = gch.history()
        assert isinstance(o, e2ee.OpenedMessage)
        assert (o.edited_at, o.text) == (edited.edited_at, '{"n": 3}')


def test_the_notes_example_as_a_process(server: HeraldServer, tmp_path: Path) -> None:
    (tmp_path / "pass").write_text("correct horse battery staple\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    env |= {
        "HERALD_URL": server.url,
        "HERALD_TOKEN": server.token("ada"),
        "HERALD_STATE": str(tmp_path / "ada.state"),
        "HERALD_STATE_PASSPHRASE_FILE": str(tmp_path / "pass"),
    }
    script = str(REPO / "examples/python/e2ee_notes.py")
    for note in ("remember the milk", "and the eggs"):
        out = subprocess.run(
            [sys.executable, script, "journal", note],
            capture_output=True,
            text=True,
            env=env,
            timeout=TIMEOUT * 4,
        )
        assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == [
        "ada: remember the milk",
        "ada: and the eggs",
    ]
    assert not grep(server.data, b"remember the milk")

"""The sync facade against a real server: the same client, blocking, from a plain thread."""

from __future__ import annotations

import pytest

import herald
from conftest import TIMEOUT, HeraldServer, fast
from herald.sync import connect


def test_sync_facade_end_to_end(server: HeraldServer) -> None:
    with (
        connect(server.url, server.token("ada"), config=fast()) as ada,
        connect(server.url, token_provider=lambda: server.token("bob"), config=fast()) as bob,
    ):
        assert (ada.user.id, bob.user.id) == ("ada", "bob")
        events = bob.events()
        general = ada.create_channel("general")
        bobs = bob.join("general")
        sent = [general.send(f"line {i}") for i in range(5)]
        # Bob's stream: his join, then every message once, in order, verified.
        got: list[str] = []
        while len(got) < 5:
            ev = events.next(TIMEOUT)
            assert not isinstance(ev, herald.ChainFailed)
            if isinstance(ev, herald.MessageEvent):
                got.append(ev.message.id)
        assert got == [m.id for m in sent]
        newest_first = [m.content for m in bobs.iter_history(page=2)]
        assert newest_first == [f"line {i}" for i in range(4, -1, -1)]
        assert [e.seq for e in bobs.iter_log(page=3)] == list(range(1, 9))
        rid = bobs.react(sent[0].id, "🎉")
        oldest = bobs.history(limit=5).messages[-1]
        assert oldest.reactions == [herald.Reaction(rid, "🎉", "bob")]
        blob = general.put_blob(b"bytes")
        assert bobs.get_blob(blob.blob_id) == b"bytes"
        sub = ada.subscribe("presence")
        bob.publish("presence", {"here": True})
        assert sub.next(TIMEOUT).data == {"here": True}
        sub.unsubscribe()
        with pytest.raises(herald.NotAuthorError):
            bobs.edit(sent[0].id, "not mine")
        with pytest.raises(herald.ChannelNotFoundError):
            bob.join("nowhere")
    with pytest.raises(herald.ClosedError):
        ada.ping()
    ada.close()  # a second close is harmless

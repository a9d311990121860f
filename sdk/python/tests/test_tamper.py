"""A man in the middle that rewrites what the server sends: the SDK refuses the tampered
entry, live (through its `hash`) and in a log page (through its `content_hash`), instead of
delivering it (PROTOCOL.md §5)."""

from __future__ import annotations

import pytest

import herald
from conftest import Clients, HeraldServer, next_of, rewriting_proxy, within

# Same length, so frame headers and Content-Length stay right and only the text changes.
ORIGINAL, FORGED = b"pay alice 10", b"pay mallory!"


async def test_a_rewritten_entry_is_refused_live_and_in_the_log(
    server: HeraldServer, connect: Clients
) -> None:
    bob = await connect("bob")
    ch = await within(bob.create_channel("ledger"))
    await within(ch.add_member("ada"))
    async with rewriting_proxy(server.addr, ORIGINAL, FORGED) as url:
        ada = await within(herald.Client.connect(url, server.token("ada")))
        try:
            events = ada.events()
            sent = await within(ch.send(ORIGINAL.decode()))

            async def first_failure() -> herald.ChainFailed:
                async for ev in events:
                    assert not (isinstance(ev, herald.MessageEvent) and ev.message.id == sent.id), (
                        "the forged message was delivered"
                    )
                    if isinstance(ev, herald.ChainFailed):
                        return ev
                raise AssertionError("stream ended")

            failed = await within(first_failure())
            # The live event carries no content_hash (docs/protocol.md §B): the forged content
            # gives another content_hash, so the entry no longer matches its `hash`.
            assert (failed.error.reason, failed.error.seq) == ("hash_mismatch", sent.seq)
            assert failed.error.channel == ch.id

            # The same forgery in a log page (REST goes through the proxy too).
            mine = await within(ada.channel(ch.id))
            with pytest.raises(herald.ChainError) as err:
                await within(mine.log(0, 50))
            assert err.value.reason == "content_mismatch"
            page_failure = await next_of(events, herald.ChainFailed)
            assert page_failure.error.seq == sent.seq
        finally:
            await ada.close()
    # Straight from the server, the same log verifies.
    page = await within(ch.log(0, 50))
    assert page.entries[-1].content == ORIGINAL.decode()

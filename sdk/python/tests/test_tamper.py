"""A man in the middle that rewrites what the server sends: the SDK refuses the tampered
entry, live and in a log page, instead of delivering it (PROTOCOL.md §5)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

import herald
from conftest import Clients, HeraldServer, next_of, within

# Same length, so frame headers and Content-Length stay right and only the text changes.
ORIGINAL, FORGED = b"pay alice 10", b"pay mallory!"


@contextlib.asynccontextmanager
async def tampering_proxy(upstream: str) -> AsyncIterator[str]:
    """A TCP proxy to ``upstream`` (host:port) that rewrites ORIGINAL into FORGED in every
    byte the server sends (frames are uncompressed and, server to client, unmasked)."""
    host, port = upstream.rsplit(":", 1)
    tasks: set[asyncio.Task[None]] = set()

    async def pump(r: asyncio.StreamReader, w: asyncio.StreamWriter, tamper: bool) -> None:
        try:
            while data := await r.read(65536):
                w.write(data.replace(ORIGINAL, FORGED) if tamper else data)
                await w.drain()
        except ConnectionError:
            pass
        finally:
            w.close()

    async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        sr, sw = await asyncio.open_connection(host, int(port))
        for t in (pump(cr, sw, False), pump(sr, cw, True)):
            task = asyncio.create_task(t)
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    addr = server.sockets[0].getsockname()
    try:
        yield f"http://{addr[0]}:{addr[1]}"
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()


async def test_a_rewritten_entry_is_refused_live_and_in_the_log(
    server: HeraldServer, connect: Clients
) -> None:
    bob = await connect("bob")
    ch = await within(bob.create_channel("ledger"))
    await within(ch.add_member("ada"))
    async with tampering_proxy(server.addr) as url:
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
            assert (failed.error.reason, failed.error.seq) == ("content_mismatch", sent.seq)
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

"""How fast the Python SDK streams: two clients of one user enter a room, one streams SIZE MiB
to the other, which accepts with a credit window of WINDOW KiB and reads as fast as it can.
Prints throughput, how often the writer waited for credit, and the round trips of a direct
message with a 1 MiB attachment. Asserts nothing but that the bytes arrived.

    HERALD_URL=http://127.0.0.1:7700 HERALD_TOKEN=$(herald token --sub bench) \\
        python examples/python/bench_stream.py [SIZE_MIB] [WINDOW_KIB]
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import statistics
import sys
import time

import herald


async def main(size_mib: int, window_kib: int) -> None:
    url = os.environ.get("HERALD_URL", "http://127.0.0.1:7700")
    token = os.environ["HERALD_TOKEN"]
    async with (
        await herald.Client.connect(url, token) as writer_client,
        await herald.Client.connect(url, token) as reader_client,
    ):
        channel = await writer_client.create_channel(f"bench-stream-{os.getpid()}")
        w_room = await writer_client.room(channel.id).enter({"role": "writer"})
        r_room = reader_client.room(channel.id)
        requests = r_room.messaging.stream_requests()
        messages = r_room.messaging.events()
        await r_room.enter({"role": "reader"})
        assert r_room.participant_id is not None
        data = os.urandom(size_mib * 1024 * 1024)

        async def read() -> bytes:
            request = await requests.__anext__()
            reader = await request.accept(credit=window_kib * 1024)
            digest = hashlib.sha256()
            async for chunk in reader:
                digest.update(chunk)
            return digest.digest()

        t0 = time.perf_counter()
        reading = asyncio.create_task(read())
        writer = await w_room.messaging.create_stream(to=r_room.participant_id)
        await writer.write(data)
        await writer.close()
        digest = await reading
        elapsed = time.perf_counter() - t0
        assert digest == hashlib.sha256(data).digest()
        print(
            f"stream: {size_mib} MiB in {elapsed:.2f} s = {size_mib / elapsed:.1f} MiB/s, "
            f"window {window_kib} KiB, {writer.credit_waits} credit waits "
            f"({writer.credit_wait_seconds:.2f} s waiting)"
        )

        attachment = os.urandom(1024 * 1024)
        rtts: list[float] = []
        for _ in range(20):
            t1 = time.perf_counter()
            await w_room.messaging.send_message(r_room.participant_id, "blob", {}, attachment)
            async for ev in messages:
                if isinstance(ev, herald.RoomMessage):
                    assert ev.attachment == attachment
                    break
            rtts.append(time.perf_counter() - t1)
        print(
            f"1 MiB attachment, sent until received: p50 {statistics.median(rtts) * 1000:.1f} ms,"
            f" max {max(rtts) * 1000:.1f} ms over {len(rtts)}"
        )


if __name__ == "__main__":
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    window = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
    asyncio.run(main(size, window))

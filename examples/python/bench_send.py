"""How fast the Python SDK sends: ``message.send`` round trips one at a time (latency) and
with many in flight (throughput, the server's group commit shares them), each measured
until its own ``message`` event is back. Prints figures; asserts nothing.

    HERALD_URL=http://127.0.0.1:7700 HERALD_TOKEN=$(herald token --sub bench) \\
        python examples/python/bench_send.py [COUNT] [IN_FLIGHT]
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time

import herald


async def main(count: int, in_flight: int) -> None:
    url = os.environ.get("HERALD_URL", "http://127.0.0.1:7700")
    async with await herald.Client.connect(url, os.environ["HERALD_TOKEN"]) as client:
        channel = await client.create_channel(f"bench-{os.getpid()}")
        latencies: list[float] = []
        for i in range(count // 10):
            t0 = time.perf_counter()
            await channel.send(f"one {i}")
            latencies.append(time.perf_counter() - t0)
        latencies.sort()
        p50 = statistics.median(latencies) * 1000
        p99 = latencies[int(len(latencies) * 0.99)] * 1000
        print(f"sequential: {len(latencies)} sends, p50 {p50:.2f} ms, p99 {p99:.2f} ms")

        window = asyncio.Semaphore(in_flight)

        async def one(i: int) -> None:
            async with window:
                await channel.send(f"many {i}")

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(count)))
        elapsed = time.perf_counter() - t0
        print(f"pipelined: {count} sends, {in_flight} in flight, {count / elapsed:,.0f} msg/s")


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    k = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    asyncio.run(main(n, k))

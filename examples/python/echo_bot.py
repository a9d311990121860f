"""A bot on the Python SDK: joins a channel and answers every ``!echo <text>`` with
``<text>``, forever, across server restarts (the client resumes by itself).

    HERALD_URL=http://127.0.0.1:7700 HERALD_TOKEN=$(herald token --sub echo-bot --kind agent) \\
        python examples/python/echo_bot.py general

It prints ``ready <channel id>`` once it listens, then one line per answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys

import herald


async def main(channel_name: str) -> None:
    url = os.environ.get("HERALD_URL", "http://127.0.0.1:7700")
    token = os.environ["HERALD_TOKEN"]
    async with await herald.Client.connect(url, token) as client:
        events = client.events()
        channel = await client.join(channel_name)
        me = client.user.id
        print(f"ready {channel.id}", flush=True)
        async for event in events:
            if isinstance(event, herald.ChainFailed):
                print(f"refused a tampered entry: {event.error}", file=sys.stderr, flush=True)
            elif (
                isinstance(event, herald.MessageEvent)
                and event.channel == channel.id
                and event.message.author != me
                and event.message.content.startswith("!echo ")
            ):
                text = event.message.content.removeprefix("!echo ")
                # Idempotent by the request's message id: a resend after a reconnect, or a
                # second copy of this bot, never answers twice.
                await channel.send(
                    text, reply_to=event.message.id, client_id=f"echo-{event.message.id}"
                )
                print(f"echoed {event.message.id}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: echo_bot.py CHANNEL")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(sys.argv[1]))

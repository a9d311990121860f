"""The example bot (examples/python/echo_bot.py) run as a process against a real server."""

from __future__ import annotations

import asyncio
import os
import sys

import herald
from conftest import REPO, TIMEOUT, Clients, HeraldServer, next_of, within


async def test_echo_bot_answers_as_a_process(server: HeraldServer, connect: Clients) -> None:
    ada = await connect("ada")
    events = ada.events()
    general = await within(ada.create_channel("general"))
    env = {
        **os.environ,
        "HERALD_URL": server.url,
        "HERALD_TOKEN": server.token("echo-bot", kind="agent"),
    }
    bot = await asyncio.create_subprocess_exec(
        sys.executable,
        str(REPO / "examples/python/echo_bot.py"),
        "general",
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert bot.stdout is not None
        ready = await asyncio.wait_for(bot.stdout.readline(), TIMEOUT)
        assert ready.decode().split() == ["ready", general.id]
        ask = await within(general.send("!echo hello from ada"))
        await within(general.send("no command here"))
        answer = await next_of(
            events, herald.MessageEvent, lambda e: e.message.author == "echo-bot"
        )
        assert answer.message.content == "hello from ada"
        assert answer.message.reply_to is not None
        assert answer.message.reply_to.id == ask.id
        line = await asyncio.wait_for(bot.stdout.readline(), TIMEOUT)
        assert line.decode().strip() == f"echoed {ask.id}"
    finally:
        bot.terminate()
        await bot.wait()

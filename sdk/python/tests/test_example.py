"""The example bot (examples/python/echo_bot.py) run as a process against a real server."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

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


async def test_room_agent_answers_and_streams_a_file_back_as_a_process(
    server: HeraldServer, connect: Clients, tmp_path: Path
) -> None:
    ada = await connect("ada")
    await within(ada.create_channel("lobby"))
    await within(ada.request("channel.add_member", channel="lobby", user="file-agent"))
    file = tmp_path / "report.bin"
    content = os.urandom(3 * 1024 * 1024 + 17)
    file.write_bytes(content)
    env = {
        **os.environ,
        "HERALD_URL": server.url,
        "HERALD_TOKEN": server.token("file-agent", kind="agent"),
    }
    agent = await asyncio.create_subprocess_exec(
        sys.executable,
        str(REPO / "examples/python/room_agent.py"),
        "lobby",
        str(file),
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert agent.stdout is not None
        ready = (await asyncio.wait_for(agent.stdout.readline(), TIMEOUT)).decode().split()
        assert ready[0] == "ready"
        agent_id = ready[1]
        room = ada.room("lobby")
        events = room.messaging.events()
        await within(room.enter())
        assert room.remote_participants[agent_id].kind == "agent"
        assert room.remote_participants[agent_id].attributes["file"] == "report.bin"

        await within(room.messaging.send_message(agent_id, "ask", {"text": "hi"}, b"\x00\x07"))
        answer = await _next_message(events)
        assert (answer.type, answer.message) == ("answer", {"text": "you said: hi"})
        assert answer.attachment == b"\x00\x07"
        assert answer.sender.participant_id == agent_id

        # A small window: the agent's writes wait for this reader's credit.
        await within(room.messaging.send_message(agent_id, "get_file", {}))
        request = await asyncio.wait_for(_next_request(events), TIMEOUT)
        assert request.header == {"name": "report.bin", "size": len(content)}
        reader = await within(request.accept(credit=128 * 1024))
        assert await within(reader.read_all()) == content
        line = (await asyncio.wait_for(agent.stdout.readline(), TIMEOUT)).decode()
        assert line.startswith(f"answered {room.participant_id}")
        line = (await asyncio.wait_for(agent.stdout.readline(), TIMEOUT)).decode()
        assert line.startswith(f"streamed {len(content)} bytes to {room.participant_id}")
        waits = int(line.split("(")[1].split()[0])
        assert waits > 0
    finally:
        agent.terminate()
        await agent.wait()


async def _next_message(events: herald.EventStream) -> herald.RoomMessage:
    async def find() -> herald.RoomMessage:
        async for ev in events:
            if isinstance(ev, herald.RoomMessage):
                return ev
        raise AssertionError("room events ended")

    return await asyncio.wait_for(find(), TIMEOUT)


async def _next_request(events: herald.EventStream) -> herald.StreamRequest:
    async for ev in events:
        if isinstance(ev, herald.StreamRequest):
            return ev
    raise AssertionError("room events ended")

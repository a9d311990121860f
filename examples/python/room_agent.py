"""An agent in a room on the Python SDK: it enters the room of a channel, answers every
direct message, and streams a file back to whoever asks for it.

    HERALD_URL=http://127.0.0.1:7700 HERALD_TOKEN=$(herald token --sub agent --kind agent) \\
        python examples/python/room_agent.py general ./report.pdf

Direct messages it understands (``room.send`` to its participant id):

- ``type "ask"``, ``{"text": …}``: answered with ``type "answer"``, ``{"text": "you said: …"}``
  and, if the question carried an attachment, that attachment back;
- ``type "get_file"``: it opens a stream to the asker (header ``{"name", "size"}``) and writes
  the file in pieces; each ``write`` waits for the reader's credit, so a slow reader paces it;
- anything else: ``type "error"``, ``{"unknown_type": …}``.

It prints ``ready <participant id>`` once in the room, then one line per thing it did. After a
reconnect it enters the room again (a participant lives as long as one connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path

import herald

PIECE = 256 * 1024


async def stream_file(room: herald.Room, to: str, path: Path) -> None:
    try:
        f = await asyncio.to_thread(path.open, "rb")
    except OSError as e:
        print(f"cannot read {path}: {e}", file=sys.stderr, flush=True)
        return
    try:
        size = os.fstat(f.fileno()).st_size
        header = {"name": path.name, "size": size}
        writer = await room.messaging.create_stream(to=to, header=header)
        # Disk reads off the loop, so a slow disk does not stall the connection.
        while piece := await asyncio.to_thread(f.read, PIECE):
            await writer.write(piece)
        await writer.close()
    except herald.HeraldError as e:
        print(f"could not stream to {to}: {e}", file=sys.stderr, flush=True)
        return
    finally:
        f.close()
    print(f"streamed {size} bytes to {to} ({writer.credit_waits} credit waits)", flush=True)


async def main(channel: str, file: Path) -> None:
    url = os.environ.get("HERALD_URL", "http://127.0.0.1:7700")
    token = os.environ["HERALD_TOKEN"]
    async with await herald.Client.connect(url, token) as client:
        connections = client.events()
        room = client.room(channel)
        messages = room.messaging.events()
        tasks: set[asyncio.Task[None]] = set()

        async def reenter() -> None:
            async for event in connections:
                if isinstance(event, herald.Connected) and not room.entered:
                    with contextlib.suppress(herald.HeraldError):
                        await room.enter({"role": "file-agent", "file": file.name})
                        print(f"ready {room.participant_id}", flush=True)

        await room.enter({"role": "file-agent", "file": file.name})
        print(f"ready {room.participant_id}", flush=True)
        watcher = asyncio.create_task(reenter())
        try:
            async for event in messages:
                if not isinstance(event, herald.RoomMessage):
                    continue
                sender = event.sender.participant_id
                try:
                    if event.type == "ask":
                        text = event.message.get("text") if isinstance(event.message, dict) else ""
                        await room.messaging.send_message(
                            sender, "answer", {"text": f"you said: {text}"}, event.attachment
                        )
                        print(f"answered {sender}", flush=True)
                    elif event.type == "get_file":
                        # On a task of its own: the stream waits for credit, messages go on.
                        task = asyncio.create_task(stream_file(room, sender, file))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                    else:
                        await room.messaging.send_message(
                            sender, "error", {"unknown_type": event.type}
                        )
                except herald.HeraldError as e:
                    print(f"could not answer {sender}: {e}", file=sys.stderr, flush=True)
        finally:
            watcher.cancel()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: room_agent.py CHANNEL FILE")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(sys.argv[1], Path(sys.argv[2])))

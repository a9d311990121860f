"""The blocking twins of :mod:`herald.rooms`, from :meth:`herald.sync.SyncClient.room`.

Callbacks given to :meth:`SyncMessaging.on` run on the client's loop thread (so they must
return quickly; a blocking call from :mod:`herald.sync` inside one raises). For work that
takes time, iterate :meth:`SyncMessaging.events` on your own thread instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .rooms import (
    DEFAULT_STREAM_CREDIT,
    Callback,
    Messaging,
    Participant,
    Room,
    StreamReader,
    StreamRequest,
    StreamWriter,
)

if TYPE_CHECKING:
    from .sync import SyncEventStream, _Loop


class SyncRoom:
    """The blocking twin of :class:`herald.Room`."""

    def __init__(self, room: Room, loop: _Loop) -> None:
        self.room = room
        self._loop = loop
        self.messaging = SyncMessaging(room.messaging, loop)

    @property
    def participant_id(self) -> str | None:
        return self.room.participant_id

    @property
    def remote_participants(self) -> dict[str, Participant]:
        return dict(self.room.remote_participants)

    @property
    def count(self) -> int | None:
        return self.room.count

    def enter(self, attributes: dict[str, Any] | None = None) -> SyncRoom:
        self._loop.run(self.room.enter(attributes))
        return self

    def update(self, attributes: dict[str, Any]) -> None:
        self._loop.run(self.room.update(attributes))

    def leave(self) -> None:
        self._loop.run(self.room.leave())

    def participants(self) -> list[Participant]:
        return self._loop.run(self.room.participants())


class SyncMessaging:
    """The blocking twin of :class:`herald.Messaging`."""

    def __init__(self, messaging: Messaging, loop: _Loop) -> None:
        self.messaging = messaging
        self._loop = loop

    def send_message(
        self, to: str, type: str, message: Any, attachment: bytes | None = None
    ) -> None:
        self._loop.run(self.messaging.send_message(to, type, message, attachment))

    def broadcast_message(self, type: str, message: Any, attachment: bytes | None = None) -> None:
        self._loop.run(self.messaging.broadcast_message(type, message, attachment))

    def on(self, name: str, callback: Callback) -> Callable[[], None]:
        """As :meth:`herald.Messaging.on`; the callback runs on the loop thread."""

        async def register() -> Callable[[], None]:
            return self.messaging.on(name, callback)

        return self._loop.run(register())

    def events(self) -> SyncEventStream:
        from .sync import SyncEventStream

        async def make() -> Any:
            return self.messaging.events()

        return SyncEventStream(self._loop.run(make()), self._loop)

    def create_stream(self, to: str, header: Any = None) -> SyncStreamWriter:
        writer = self._loop.run(self.messaging.create_stream(to, header))
        return SyncStreamWriter(writer, self._loop)

    def accept(
        self, request: StreamRequest, credit: int = DEFAULT_STREAM_CREDIT
    ) -> SyncStreamReader:
        """Accepts a :class:`herald.StreamRequest` (from :meth:`events`)."""
        reader = self._loop.run(self.messaging.accept_stream(request.stream_id, credit))
        return SyncStreamReader(reader, self._loop)

    def reject(self, request: StreamRequest) -> None:
        self._loop.run(self.messaging.reject_stream(request.stream_id))


class SyncStreamWriter:
    """The blocking twin of :class:`herald.StreamWriter`: ``write`` blocks for credit."""

    def __init__(self, writer: StreamWriter, loop: _Loop) -> None:
        self.writer = writer
        self._loop = loop

    @property
    def stream_id(self) -> str:
        return self.writer.stream_id

    def write(self, data: bytes) -> None:
        self._loop.run(self.writer.write(data))

    def close(self) -> None:
        self._loop.run(self.writer.close())


class SyncStreamReader:
    """The blocking twin of :class:`herald.StreamReader`: iterate it for the chunks."""

    def __init__(self, reader: StreamReader, loop: _Loop) -> None:
        self.reader = reader
        self._loop = loop

    @property
    def stream_id(self) -> str:
        return self.reader.stream_id

    def __iter__(self) -> Iterator[bytes]:
        return self._loop.iterate(self.reader)

    def read_all(self) -> bytes:
        return self._loop.run(self.reader.read_all())

    def close(self) -> None:
        self._loop.run(self.reader.close())

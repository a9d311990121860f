"""A thin blocking facade over the asyncio client, for scripts and REPLs::

    from herald.sync import connect

    with connect("http://127.0.0.1:7700", token) as client:
        general = client.create_channel("general")
        general.send("hello")
        for message in general.iter_history():
            print(message.author, message.content)

Each :class:`SyncClient` runs its own event loop in a daemon thread; every method submits
the matching coroutine of :class:`herald.Client` to it and waits for the result, so the
semantics (reconnect, resume, chain verification, errors) are exactly the async ones.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, TypeVar

from .client import Channel, Client, ClientConfig, EventStream, Subscription
from .errors import ClosedError
from .events import Event, Publication
from .models import (
    BlobRef,
    ChannelData,
    ChannelInfo,
    ChannelSummary,
    DirectoryEntry,
    HistoryPage,
    LogEntry,
    LogPage,
    Message,
    User,
)

T = TypeVar("T")


class _Loop:
    """An event loop in a daemon thread, owned by one client."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="herald", daemon=True)
        self._thread.start()
        self._stopped = False

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._stopped:
            coro.close()
            raise ClosedError("client is closed")
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a herald.sync call from inside its own event loop")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def iterate(self, agen: AsyncIterator[T]) -> Iterator[T]:
        while True:
            try:
                yield self.run(_anext(agen))
            except StopAsyncIteration:
                return

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()


async def _anext(agen: AsyncIterator[T]) -> T:
    return await agen.__anext__()


def connect(
    url: str,
    token: str = "",
    *,
    token_provider: Callable[[], str] | None = None,
    config: ClientConfig | None = None,
) -> SyncClient:
    """Connects like :meth:`herald.Client.connect`; ``token_provider`` is a plain function
    here (it runs in a worker thread, so it may block on an HTTP call)."""
    loop = _Loop()

    async def start() -> Client:
        provider = None
        if token_provider is not None:
            fetch = token_provider

            async def provider() -> str:
                return await asyncio.to_thread(fetch)

        return await Client.connect(url, token, token_provider=provider, config=config)

    try:
        client = loop.run(start())
    except BaseException:
        loop.stop()
        raise
    return SyncClient(client, loop)


class SyncEventStream:
    """The blocking twin of :class:`herald.EventStream`: iterate it, or call :meth:`next`."""

    def __init__(self, stream: EventStream, loop: _Loop) -> None:
        self._stream = stream
        self._loop = loop

    def __iter__(self) -> Iterator[Event]:
        return self._loop.iterate(self._stream)

    def next(self, timeout: float | None = None) -> Event:
        """The next event; ``TimeoutError`` after ``timeout`` seconds, ``StopIteration``
        once the stream ended."""
        try:
            return self._loop.run(self._stream.next(timeout))
        except StopAsyncIteration:
            raise StopIteration from None

    def close(self) -> None:
        self._stream.close()


class SyncSubscription:
    """The blocking twin of :class:`herald.Subscription`."""

    def __init__(self, sub: Subscription, loop: _Loop) -> None:
        self._sub = sub
        self._loop = loop
        self.subject = sub.subject

    def __iter__(self) -> Iterator[Publication]:
        return self._loop.iterate(self._sub)

    def next(self, timeout: float | None = None) -> Publication:
        return self._loop.run(self._sub.next(timeout))

    def unsubscribe(self) -> None:
        self._loop.run(self._sub.unsubscribe())


class SyncChannel:
    """The blocking twin of :class:`herald.Channel`."""

    def __init__(self, channel: Channel, loop: _Loop) -> None:
        self.channel = channel
        self._loop = loop

    @property
    def id(self) -> str:
        return self.channel.id

    @property
    def name(self) -> str | None:
        return self.channel.name

    @property
    def data(self) -> ChannelData:
        return self.channel.data

    def __repr__(self) -> str:
        return f"SyncChannel(id={self.id!r}, name={self.name!r})"

    def send(self, content: str, **options: Any) -> Message:
        return self._loop.run(self.channel.send(content, **options))

    def edit(self, message_id: str, content: str, **extra: Any) -> Message:
        return self._loop.run(self.channel.edit(message_id, content, **extra))

    def delete_message(self, message_id: str) -> None:
        self._loop.run(self.channel.delete_message(message_id))

    def react(self, message_id: str, emoji: str) -> str:
        return self._loop.run(self.channel.react(message_id, emoji))

    def unreact(self, reaction_id: str) -> None:
        self._loop.run(self.channel.unreact(reaction_id))

    def read(self, message_id: str) -> None:
        self._loop.run(self.channel.read(message_id))

    def typing(self, is_typing: bool = True) -> None:
        self._loop.run(self.channel.typing(is_typing))

    def ephemeral(self, subject: str, data: Any) -> None:
        self._loop.run(self.channel.ephemeral(subject, data))

    def leave(self) -> None:
        self._loop.run(self.channel.leave())

    def add_member(self, user: str) -> None:
        self._loop.run(self.channel.add_member(user))

    def remove_member(self, user: str) -> None:
        self._loop.run(self.channel.remove_member(user))

    def delete(self) -> None:
        self._loop.run(self.channel.delete())

    def info(self) -> ChannelInfo:
        return self._loop.run(self.channel.info())

    def history(self, **query: Any) -> HistoryPage:
        return self._loop.run(self.channel.history(**query))

    def iter_history(self, *, after: int | None = None, page: int = 100) -> Iterator[Message]:
        return self._loop.iterate(self.channel.iter_history(after=after, page=page))

    def log(self, after: int = 0, limit: int = 100) -> LogPage:
        return self._loop.run(self.channel.log(after, limit))

    def iter_log(self, after: int = 0, *, page: int = 100) -> Iterator[LogEntry]:
        return self._loop.iterate(self.channel.iter_log(after, page=page))

    def put_blob(self, data: bytes) -> BlobRef:
        return self._loop.run(self.channel.put_blob(data))

    def get_blob(self, blob_id: str) -> bytes:
        return self._loop.run(self.channel.get_blob(blob_id))


class SyncClient:
    """The blocking twin of :class:`herald.Client`, from :func:`connect`."""

    def __init__(self, client: Client, loop: _Loop) -> None:
        self.client = client
        self._loop = loop

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._loop._stopped:
            return
        try:
            self._loop.run(self.client.close())
        finally:
            self._loop.stop()

    @property
    def user(self) -> User:
        return self.client.user

    @property
    def conn_id(self) -> str:
        return self.client.conn_id

    def _wrap(self, ch: Coroutine[Any, Any, Channel]) -> SyncChannel:
        return SyncChannel(self._loop.run(ch), self._loop)

    def events(self) -> SyncEventStream:
        async def make() -> EventStream:
            return self.client.events()

        return SyncEventStream(self._loop.run(make()), self._loop)

    def request(self, op: str, **fields: Any) -> Any:
        return self._loop.run(self.client.request(op, **fields))

    def ping(self) -> None:
        self._loop.run(self.client.ping())

    def refresh_token(self, token: str) -> str:
        return self._loop.run(self.client.refresh_token(token))

    def subscribe(self, subject: str) -> SyncSubscription:
        return SyncSubscription(self._loop.run(self.client.subscribe(subject)), self._loop)

    def publish(self, subject: str, data: Any) -> None:
        self._loop.run(self.client.publish(subject, data))

    def create_channel(self, name: str | None = None, **options: Any) -> SyncChannel:
        return self._wrap(self.client.create_channel(name, **options))

    def join(self, channel: str, *, auth: str | None = None) -> SyncChannel:
        return self._wrap(self.client.join(channel, auth=auth))

    def channel(self, channel: str) -> SyncChannel:
        return self._wrap(self.client.channel(channel))

    def list_channels(self) -> list[ChannelSummary]:
        return self._loop.run(self.client.list_channels())

    def directory(self) -> list[DirectoryEntry]:
        return self._loop.run(self.client.directory())

    def delete_channel(self, channel: str) -> None:
        self._loop.run(self.client.delete_channel(channel))

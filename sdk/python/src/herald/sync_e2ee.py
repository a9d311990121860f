"""The blocking facade of :mod:`herald.e2ee`, for scripts (the :mod:`herald.sync` pattern:
an event loop in a daemon thread runs the async calls)::

    from herald.sync_e2ee import connect
    from herald.e2ee import StateKey

    with connect(url, token, state="ada.state", key=StateKey(passphrase="…")) as ada:
        space = ada.space()
        space.post_encrypted_message("general", "chat.text", {"text": "hi"})
        for msg in space.get_messages("general"):
            print(space.decrypt_message_data(msg, "general"))
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from .client import ClientConfig, TokenProvider
from .e2ee import (
    DEFAULT_ONE_TIME_KEYS,
    Dm,
    DmFailure,
    DmStream,
    E2ee,
    EncryptedChannel,
    Opened,
    OpenedEdit,
    OpenedEvent,
    Space,
    StateKey,
    Unopenable,
    _OpenedStream,
)
from .events import MessageEdited
from .models import Message
from .sync import _Loop


def connect(
    url: str,
    token: str = "",
    *,
    token_provider: Callable[[], str] | None = None,
    state: str | os.PathLike[str],
    key: StateKey,
    device_id: str | None = None,
    config: ClientConfig | None = None,
    one_time_keys: int = DEFAULT_ONE_TIME_KEYS,
    min_one_time_keys: int = DEFAULT_ONE_TIME_KEYS // 2,
) -> SyncE2ee:
    """:meth:`herald.e2ee.E2ee.connect`, blocking; ``token_provider`` is a plain function
    here (it runs in a worker thread, so it may block on an HTTP call)."""
    loop = _Loop()
    provider: TokenProvider | None = None
    if token_provider is not None:
        fetch = token_provider

        async def provider() -> str:
            return await asyncio.to_thread(fetch)

    try:
        e2ee = loop.run(
            E2ee.connect(
                url,
                token,
                token_provider=provider,
                state=state,
                key=key,
                device_id=device_id,
                config=config,
                one_time_keys=one_time_keys,
                min_one_time_keys=min_one_time_keys,
            )
        )
    except BaseException:
        loop.stop()
        raise
    return SyncE2ee(e2ee, loop)


_T = TypeVar("_T")


class SyncE2ee:
    """The blocking twin of :class:`herald.e2ee.E2ee`."""

    def __init__(self, e2ee: E2ee, loop: _Loop) -> None:
        self.e2ee = e2ee
        self._loop = loop

    def __enter__(self) -> SyncE2ee:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._loop.run(self.e2ee.close())
        finally:
            self._loop.stop()

    @property
    def device_id(self) -> str:
        return self.e2ee.device_id

    @property
    def user(self) -> str:
        return self.e2ee.user

    @property
    def fingerprint(self) -> str:
        return self.e2ee.fingerprint

    def send_dm(self, user: str, payload: bytes | str) -> list[str]:
        return self._loop.run(self.e2ee.send_dm(user, payload))

    def dms(self) -> SyncDmStream:
        return SyncDmStream(self.e2ee.dms(), self._loop)

    def verify_device(self, user: str, device: str, fingerprint_hex: str) -> None:
        self._loop.run(self.e2ee.verify_device(user, device, fingerprint_hex))

    def list_devices(self, user: str) -> list[dict[str, Any]]:
        return self._loop.run(self.e2ee.list_devices(user))

    def create_encrypted(
        self, name: str | None = None, *, members: list[str] | None = None
    ) -> SyncEncryptedChannel:
        ch = self._loop.run(self.e2ee.create_encrypted(name, members=members))
        return SyncEncryptedChannel(ch, self._loop)

    def join_encrypted(self, channel: str) -> SyncEncryptedChannel:
        return SyncEncryptedChannel(self._loop.run(self.e2ee.join_encrypted(channel)), self._loop)

    def encrypted_channel(self, channel: str) -> SyncEncryptedChannel:
        return SyncEncryptedChannel(
            self._loop.run(self.e2ee.encrypted_channel(channel)), self._loop
        )

    def space(self) -> SyncSpace:
        return SyncSpace(self.e2ee.space(), self._loop)


class SyncDmStream:
    """Iterate it, or :meth:`next` with a timeout."""

    def __init__(self, stream: DmStream, loop: _Loop) -> None:
        self._stream = stream
        self._loop = loop

    def __iter__(self) -> Iterator[Dm | DmFailure]:
        return self._loop.iterate(self._stream)

    def next(self, timeout: float | None = None) -> Dm | DmFailure:
        return self._loop.run(self._stream.next(timeout))


class SyncEncryptedChannel:
    """The blocking twin of :class:`herald.e2ee.EncryptedChannel`."""

    def __init__(self, channel: EncryptedChannel, loop: _Loop) -> None:
        self.channel = channel
        self._loop = loop

    @property
    def id(self) -> str:
        return self.channel.id

    @property
    def epoch(self) -> int | None:
        return self.channel.epoch

    def members(self) -> list[dict[str, Any]]:
        return self.channel.members()

    def sync(self) -> None:
        self._loop.run(self.channel.sync())

    def wait_for_keys(self, epoch: int | None = None, timeout: float = 15.0) -> None:
        self._loop.run(self.channel.wait_for_keys(epoch, timeout))

    def send(self, plaintext: bytes | str, *, type: str | None = None) -> Message:
        return self._loop.run(self.channel.send(plaintext, type=type))

    def edit(self, message_id: str, plaintext: bytes | str) -> Message:
        return self._loop.run(self.channel.edit(message_id, plaintext))

    def open(self, message: Message) -> Opened:
        return self._loop.run(self.channel.open(message))

    def open_edit(self, edit: MessageEdited) -> OpenedEdit | Unopenable:
        return self._loop.run(self.channel.open_edit(edit))

    def messages(self) -> SyncEncryptedMessages:
        """New messages from now on, opened (:meth:`EncryptedChannel.messages`)."""
        return SyncEncryptedMessages(self.channel.messages(), self._loop)

    def edits(self) -> SyncEncryptedEdits:
        """Edits from now on, opened (:meth:`EncryptedChannel.edits`)."""
        return SyncEncryptedEdits(self.channel.edits(), self._loop)

    def events(self) -> SyncEncryptedEvents:
        """New messages and edits from now on, opened (:meth:`EncryptedChannel.events`)."""
        return SyncEncryptedEvents(self.channel.events(), self._loop)

    def history(self, *, after: int = 0) -> list[Opened]:
        return self._loop.run(self.channel.history(after=after))

    def add_member(self, user: str) -> None:
        self._loop.run(self.channel.add_member(user))

    def remove_member(self, user: str) -> None:
        self._loop.run(self.channel.remove_member(user))

    def rotate(self) -> None:
        self._loop.run(self.channel.rotate())

    def put_file(
        self, data: bytes, name: str, mime: str = "application/octet-stream"
    ) -> tuple[Message, dict[str, Any]]:
        return self._loop.run(self.channel.put_file(data, name, mime))

    def get_file(self, manifest: dict[str, Any]) -> bytes:
        return self._loop.run(self.channel.get_file(manifest))


class _SyncOpenedStream(Generic[_T]):
    """Iterate it, or :meth:`next` with a timeout; :meth:`close` when done."""

    def __init__(self, stream: _OpenedStream[_T], loop: _Loop) -> None:
        self._stream = stream
        self._loop = loop

    def __iter__(self) -> Iterator[_T]:
        return self._loop.iterate(self._stream)

    def next(self, timeout: float | None = None) -> _T:
        return self._loop.run(self._stream.next(timeout))

    def close(self) -> None:
        # On the loop's thread: the stream wakes its reader through asyncio primitives.
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            self._loop.loop.call_soon_threadsafe(self._stream.close)


class SyncEncryptedMessages(_SyncOpenedStream[Opened]):
    """New messages of one encrypted channel, opened (:class:`herald.e2ee.EncryptedMessages`)."""


class SyncEncryptedEdits(_SyncOpenedStream[OpenedEdit | Unopenable]):
    """Edits of one encrypted channel's messages, opened (:class:`herald.e2ee.EncryptedEdits`)."""


class SyncEncryptedEvents(_SyncOpenedStream[OpenedEvent]):
    """New messages and edits of one encrypted channel, opened
    (:class:`herald.e2ee.EncryptedEvents`)."""


class SyncSpace:
    """The blocking twin of :class:`herald.e2ee.Space`."""

    def __init__(self, space: Space, loop: _Loop) -> None:
        self.space = space
        self._loop = loop

    def post_encrypted_message(self, topic: str, type: str, data: Any) -> Message:
        return self._loop.run(self.space.post_encrypted_message(topic, type, data))

    def edit_encrypted_message(self, topic: str, message_id: str, data: Any) -> Message:
        return self._loop.run(self.space.edit_encrypted_message(topic, message_id, data))

    def get_messages(self, topic: str, *, from_: int | str | None = None) -> list[Message]:
        return self._loop.run(self.space.get_messages(topic, from_=from_))

    def decrypt_message_data(self, msg: Message | MessageEdited, topic: str) -> Any:
        return self._loop.run(self.space.decrypt_message_data(msg, topic))

"""The asyncio client: one WebSocket that reconnects and resumes by itself, plus REST.

::

    client = await herald.Client.connect("http://127.0.0.1:7700", token)
    general = await client.create_channel("general")
    await general.send("hello")
    async for event in client.events():
        ...

One task per client owns the socket: it connects, feeds every frame to the pure
:class:`~herald.session.Session`, writes what the session asks for, and hands events to the
streams made by :meth:`Client.events`. When the connection drops it waits a backoff and
reconnects with the resume points, so every log event arrives once, in order, across
restarts. It stops when the client is closed, when the server refuses the token (an
``unauthorized`` reply to ``connect``, or close code 4401 without a token provider), or
after ``max_reconnect_attempts``. With a token provider it asks for a token before every
attempt and refreshes the open connection (``auth.refresh``) at 80% of the token's life.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import random
import secrets
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from .chain import verify_log_page
from .errors import (
    ChainError,
    ClosedError,
    ConnectError,
    HeraldError,
    ProtocolError,
    RequestTimeoutError,
    ServerError,
    UnauthorizedError,
)
from .events import ChainFailed, Connected, Disconnected, Event, Lagged, Publication
from .models import (
    BlobRef,
    ChannelData,
    ChannelInfo,
    ChannelSummary,
    ConnectInfo,
    DirectoryEntry,
    HistoryPage,
    LogEntry,
    LogPage,
    Message,
    User,
)
from .rest import Rest
from .rooms import Room, RoomDriver
from .session import Emit, Output, Rejected, Reply, Send, Session

log = logging.getLogger("herald")

TokenProvider = Callable[[], Awaitable[str]]
"""An async callable returning a fresh token, e.g. from the app's own backend."""

CLOSE_UNAUTHORIZED = 4401

# How many events wait for the first listener at most.
_BACKLOG_CAP = 10_000


@dataclass
class ClientConfig:
    """How a :class:`Client` behaves; the defaults suit interactive use. Times in seconds."""

    backoff_initial: float = 0.2
    backoff_max: float = 15.0
    backoff_factor: float = 2.0
    # Fraction of the delay that is randomised, so clients of a restarted server do not
    # reconnect in lockstep.
    backoff_jitter: float = 0.5
    # Give up after this many consecutive failed attempts (None: never).
    max_reconnect_attempts: int | None = None
    connect_timeout: float = 10.0
    request_timeout: float = 30.0
    # Ping the server this often; a connection whose Pong does not come within as long
    # again is taken as dead and reconnected (a vanished network sends no close).
    keepalive: float | None = 25.0
    # Events one stream of Client.events() may hold unread before it ends with Lagged.
    event_buffer: int = 10_000
    # The largest frame accepted from the server (a full history page can be tens of MiB).
    max_frame_bytes: int = 64 * 1024 * 1024
    token_provider: TokenProvider | None = None
    # Other nodes of the same deployment: after a drop the client moves to the next one and
    # resumes there; REST calls follow it.
    fallback_urls: list[str] = field(default_factory=list)
    # For wss:// and https:// with a private CA; None uses the system's trust store.
    ssl_context: ssl.SSLContext | None = None
    # The E2EE device this client speaks for (PROTOCOL.md §7), declared on every connect.
    # Set by herald.e2ee.E2ee.connect; the device must be registered first.
    device: str | None = None

    def backoff(self, attempt: int, unit: float) -> float:
        """The delay before reconnect attempt ``attempt`` (1-based); ``unit`` in [0, 1)."""
        exp = min(max(attempt - 1, 0), 32)
        base = self.backoff_initial * max(self.backoff_factor, 1.0) ** exp
        capped = min(base, self.backoff_max)
        jitter = min(max(self.backoff_jitter, 0.0), 1.0)
        return capped * (1.0 - jitter * min(max(unit, 0.0), 1.0))


@dataclass(frozen=True)
class Endpoint:
    """The WebSocket and REST addresses derived from a URL given to ``connect``."""

    ws: str
    http: str

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        scheme, sep, rest = url.partition("://")
        if not sep:
            raise ValueError(f"invalid url {url!r}: expected http://, https://, ws:// or wss://")
        kinds = {"http": ("ws", "http"), "ws": ("ws", "http")}
        kinds |= {"https": ("wss", "https"), "wss": ("wss", "https")}
        pair = kinds.get(scheme.lower())
        if pair is None:
            raise ValueError(f"invalid url {url!r}: expected http://, https://, ws:// or wss://")
        base = rest.rstrip("/")
        for suffix in ("/v1/ws", "/v1"):
            if base.endswith(suffix):
                base = base[: -len(suffix)]
                break
        if not base:
            raise ValueError(f"invalid url {url!r}: missing host")
        return cls(ws=f"{pair[0]}://{base}/v1/ws", http=f"{pair[1]}://{base}")


def jwt_exp(token: str) -> int | None:
    """The ``exp`` claim (seconds since the epoch) of a JWT, read without verifying it."""
    parts = token.split(".")
    if len(parts) < 2:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, TypeError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return exp if isinstance(exp, int) and not isinstance(exp, bool) else None


def refresh_delay(now_ms: int, exp_ms: int) -> float:
    """Seconds until a token expiring at ``exp_ms`` should be refreshed: at 80% of its
    remaining lifetime (0 if already expired)."""
    return max(exp_ms - now_ms, 0) * 0.8 / 1000.0


def _refresh_after(token: str) -> float | None:
    exp = jwt_exp(token)
    return None if exp is None else refresh_delay(int(time.time() * 1000), exp * 1000)


def new_client_id() -> str:
    """A fresh idempotency key for ``message.send``: 128 random bits in hex."""
    return secrets.token_hex(16)


class EventStream(AsyncIterator[Event]):
    """Every event from when it was made: server pushes (log events verified, deduplicated,
    in order), connection changes and chain errors.

    Bounded: a reader that falls ``capacity`` events behind gets a final :class:`Lagged`
    and the stream ends, so a slow reader never grows memory without bound and nothing is
    skipped silently. It also ends when the client closes.
    """

    def __init__(self, capacity: int) -> None:
        self._items: deque[Event] = deque()
        self._capacity = max(capacity, 1)
        self._closed = False
        self._lagged = False
        self._wake = asyncio.Event()

    def _offer(self, event: Event) -> bool:
        if self._closed:
            return False
        if len(self._items) >= self._capacity:
            self._lagged = True
            self._finish()
            return False
        self._items.append(event)
        self._wake.set()
        return True

    def _finish(self) -> None:
        self._closed = True
        self._wake.set()

    def close(self) -> None:
        """Stops this stream; the client drops it at the next event."""
        self._finish()
        self._items.clear()

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        while True:
            if self._items:
                return self._items.popleft()
            if self._closed:
                if self._lagged:
                    self._lagged = False
                    return Lagged(self._capacity)
                raise StopAsyncIteration
            self._wake.clear()
            await self._wake.wait()

    async def next(self, timeout: float | None = None) -> Event:
        """The next event; ``StopAsyncIteration`` once ended, ``TimeoutError`` after
        ``timeout`` seconds."""
        try:
            return await asyncio.wait_for(self.__anext__(), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"no event within {timeout} s") from None


class Subscription(AsyncIterator[Publication]):
    """Publications of one subject, from :meth:`Client.subscribe`; renewed after every
    reconnect. Bounded by ``ClientConfig.event_buffer``: past it new publications are
    dropped (subjects are at most once anyway) and counted in ``dropped``."""

    def __init__(self, client: Client, subject: str, capacity: int) -> None:
        self.subject = subject
        self.dropped = 0
        self._client = client
        self._stream = EventStream(capacity)
        self._active = True

    def _offer(self, p: Publication) -> bool:
        if len(self._stream._items) >= self._stream._capacity:
            self.dropped += 1
            return True
        return self._stream._offer(p)

    def _end(self) -> None:
        self._stream._finish()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Publication:
        event = await self._stream.__anext__()
        if not isinstance(event, Publication):
            raise StopAsyncIteration
        return event

    async def next(self, timeout: float | None = None) -> Publication:
        """The next publication, ``TimeoutError`` after ``timeout`` seconds."""
        try:
            return await asyncio.wait_for(self.__anext__(), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"no publication on {self.subject!r} within {timeout} s") from None

    async def unsubscribe(self) -> None:
        """Removes this subscription; with the last one of its subject, returns once the
        server has stopped sending it."""
        self._end()
        if self._active:
            self._active = False
            await self._client._unsubscribe(self)


@dataclass
class _End:
    kind: str  # closed | unauthorized | rejected | lost
    reason: str = ""
    error: ServerError | None = None


class Client:
    """A connection to a Herald server that reconnects and resumes by itself.

    Requests made while reconnecting wait for the connection (up to ``request_timeout``;
    a request that timed out is never sent later). Requests in flight when it drops fail
    with :class:`~herald.errors.ConnectionLostError`, except sends with a ``client_id``
    (every :meth:`Channel.send` has one), which are resent and answered once.
    """

    def __init__(self, endpoints: list[Endpoint], token: str, config: ClientConfig) -> None:
        self.config = config
        self._endpoints = endpoints
        self._next = 0
        self._endpoint = endpoints[0]
        self._token = token
        self._first_attempt = True
        self._session: Session[asyncio.Future[Any]] = Session(is_abandoned=lambda f: f.done())
        self._outq: asyncio.Queue[str | bytes] | None = None
        self._ws: ClientConnection | None = None
        self._listeners: list[EventStream] = []
        self._backlog: list[Event] | None = []
        self._subs: dict[str, list[Subscription]] = {}
        self._ready: asyncio.Future[ConnectInfo] = asyncio.get_running_loop().create_future()
        self._first_ok: ConnectInfo | None = None
        self._info: ConnectInfo | None = None
        self._closing = False
        self._stopped = False
        self._wake = asyncio.Event()
        self._http = httpx.AsyncClient(
            timeout=config.request_timeout,
            trust_env=False,
            verify=config.ssl_context if config.ssl_context is not None else True,
        )
        self.rest = Rest(self._http, lambda: self._endpoint.http, lambda: self._token)
        self._task: asyncio.Task[None] | None = None
        self._rooms = RoomDriver(self._send_frame)

    # -- lifecycle --------------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        url: str,
        token: str = "",
        *,
        token_provider: TokenProvider | None = None,
        config: ClientConfig | None = None,
    ) -> Client:
        """Connects to ``url`` (``http://host:port`` or ``ws://…``; the WebSocket is at
        ``/v1/ws``, REST under ``/v1``) and returns once ``connect`` is answered and the
        resume points are seeded. Raises if this first attempt fails
        (:class:`~herald.errors.UnauthorizedError`, :class:`~herald.errors.ConnectError`);
        later drops are reconnected with backoff. With a ``token_provider`` every attempt
        asks it for the token (``token`` is then only the fallback of the first attempt)."""
        config = config or ClientConfig()
        if token_provider is not None:
            config.token_provider = token_provider
        endpoints = [Endpoint.parse(u) for u in [url, *config.fallback_urls]]
        client = cls(endpoints, token, config)
        client._task = asyncio.create_task(client._run(), name="herald-client")
        try:
            await client._ready
        except BaseException:
            await client.close()
            raise
        return client

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the connection. Waiting requests fail with ClosedError; streams end."""
        self._closing = True
        self._wake.set()
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close(1000, "client closed")
        if self._task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._task
        await self._http.aclose()

    @property
    def user(self) -> User:
        """The user the server authenticated."""
        info = self._info
        if info is None:
            raise ClosedError("not connected")
        return info.user

    @property
    def conn_id(self) -> str:
        """The ``conn_id`` of the current connection (changes at every reconnect): the one
        a backend signs for a ``private-`` channel (:func:`herald.sign_channel`)."""
        info = self._info
        if info is None:
            raise ClosedError("not connected")
        return info.conn_id

    @property
    def token(self) -> str:
        """The token in use (the newest one after a refresh)."""
        return self._token

    @property
    def connected(self) -> bool:
        return self._session.is_ready

    def resume_points(self) -> dict[str, int]:
        """The last delivered ``seq`` of every channel: what the next connect resumes from."""
        return self._session.resume_points()

    # -- the socket task --------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        try:
            while True:
                end, was_ready = await self._connect_once()
                if self._first_ok is not None and not self._ready.done():
                    self._ready.set_result(self._first_ok)
                self._first_ok = None
                if end.kind == "closed":
                    return self._stop(lambda: ClosedError("client closed"), "closed")
                if end.kind == "unauthorized":
                    err = end.error or UnauthorizedError("the server refused the token")
                    if not self._ready.done():
                        self._ready.set_exception(err)
                    return self._stop(partial(UnauthorizedError, err.message), "unauthorized")
                if not self._ready.done():
                    first: HeraldError = end.error or ConnectError(end.reason)
                    self._ready.set_exception(first)
                    return self._stop(lambda: ClosedError("first connect failed"), end.reason)
                self._apply(self._session.disconnected(end.reason))
                self._rooms.disconnected(end.reason)
                if len(self._endpoints) > 1:
                    self._next = (self._next + 1) % len(self._endpoints)
                    self._endpoint = self._endpoints[self._next]
                attempt = 1 if was_ready else attempt + 1
                limit = self.config.max_reconnect_attempts
                if limit is not None and attempt > limit:
                    log.warning("giving up reconnecting after %d attempts", limit)
                    return self._stop(lambda: ClosedError("gave up reconnecting"), "gave up")
                delay = self.config.backoff(attempt, random.random())
                log.debug("reconnecting in %.2f s (%s)", delay, end.reason)
                self._wake.clear()
                if self._closing:
                    return self._stop(lambda: ClosedError("client closed"), "closed")
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                if self._closing:
                    return self._stop(lambda: ClosedError("client closed"), "closed")
        except BaseException:
            if not self._ready.done():
                self._ready.set_exception(ClosedError("client task failed"))
            self._stop(lambda: ClosedError("client task failed"), "failed")
            raise

    def _stop(self, error: Callable[[], HeraldError], reason: str) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._apply(self._session.shutdown(error))
        self._rooms.disconnected(f"client stopped: {reason}")
        self._broadcast(Disconnected(reason))
        for stream in self._listeners:
            stream._finish()
        self._listeners.clear()
        for subs in self._subs.values():
            for sub in subs:
                sub._end()
        self._subs.clear()

    async def _connect_once(self) -> tuple[_End, bool]:
        first_attempt, self._first_attempt = self._first_attempt, False
        provider = self.config.token_provider
        if provider is not None:
            try:
                self._token = await asyncio.wait_for(provider(), self.config.connect_timeout)
            except Exception as e:
                reason = f"token provider failed: {e!r}"
                if not first_attempt or not self._token:
                    return _End("lost", reason), False
                log.warning("%s; connecting with the token given to connect", reason)
        if self._closing:
            return _End("closed"), False
        keepalive = self.config.keepalive or None
        try:
            ws = await ws_connect(
                self._endpoint.ws,
                open_timeout=self.config.connect_timeout,
                ping_interval=keepalive,
                ping_timeout=keepalive,
                max_size=self.config.max_frame_bytes,
                max_queue=64,
                compression=None,
                proxy=None,
                ssl=self.config.ssl_context if self._endpoint.ws.startswith("wss:") else None,
            )
        except (OSError, InvalidHandshake, InvalidURI, asyncio.TimeoutError) as e:
            return _End("lost", f"cannot connect to {self._endpoint.ws}: {e!r}"), False
        except Exception as e:
            # Whatever else the handshake raises is a failed attempt too, never a dead client.
            log.warning("unexpected error connecting: %r", e)
            return _End("lost", f"cannot connect to {self._endpoint.ws}: {e!r}"), False
        self._ws = ws
        queue: asyncio.Queue[str | bytes] = asyncio.Queue()
        self._outq = queue
        queue.put_nowait(self._session.connect(self._token, device=self.config.device))
        writer = asyncio.create_task(self._writer(ws, queue))
        refresher = asyncio.create_task(self._refresher(provider)) if provider else None
        end: _End | None = None
        try:
            if self._closing:
                await ws.close(1000, "client closed")
            async for msg in ws:
                if isinstance(msg, bytes):
                    # Binary frames are only ever room traffic (attachments, chunks).
                    self._rooms.handle_binary(msg)
                    continue
                if self._rooms.handle_text(msg):
                    continue
                end = self._apply(self._session.handle_text(msg))
                if end is not None:
                    await ws.close(1000, "connect refused")
                    break
                self._answer_ready()
        except ConnectionClosed:
            pass
        finally:
            self._outq = None
            self._ws = None
            writer.cancel()
            if refresher is not None:
                refresher.cancel()
        was_ready = self._session.is_ready
        if end is not None:
            return end, was_ready
        if self._closing:
            return _End("closed"), was_ready
        code, why = ws.close_code, ws.close_reason or ""
        if code == CLOSE_UNAUTHORIZED and provider is None:
            return _End("unauthorized", f"server closed with 4401: {why}"), was_ready
        reason = f"server closed with {code}: {why}" if code else "connection lost"
        return _End("lost", reason), was_ready

    async def _writer(self, ws: ClientConnection, queue: asyncio.Queue[str | bytes]) -> None:
        try:
            while True:
                text = await queue.get()
                await ws.send(text)
        except ConnectionClosed:
            pass
        except Exception as e:
            log.warning("write failed: %r", e)
            await ws.close(1011, "client write failed")

    async def _refresher(self, provider: TokenProvider) -> None:
        """Refreshes the token of the open connection at 80% of its remaining life."""
        delay = _refresh_after(self._token)
        while delay is not None:
            await asyncio.sleep(delay)
            try:
                new = await asyncio.wait_for(provider(), self.config.connect_timeout)
                await self.refresh_token(new)
                delay = _refresh_after(new)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("token refresh failed, retrying: %r", e)
                delay = max(_refresh_after(self._token) or 5.0, 0.5)

    def _answer_ready(self) -> None:
        if not self._session.is_seeding and self._first_ok is not None:
            if not self._ready.done():
                self._ready.set_result(self._first_ok)
            self._first_ok = None

    def _apply(self, outs: list[Output[asyncio.Future[Any]]]) -> _End | None:
        end: _End | None = None
        for out in outs:
            if isinstance(out, Send):
                if self._outq is not None:
                    self._outq.put_nowait(out.text)
            elif isinstance(out, Reply):
                waiter = out.waiter
                if waiter.done():
                    continue
                if out.error is not None:
                    waiter.set_exception(out.error)
                else:
                    waiter.set_result(out.ok)
            elif isinstance(out, Emit):
                self._deliver(out.event)
            elif isinstance(out, Rejected):
                kind = "unauthorized" if out.error.code == "unauthorized" else "rejected"
                end = _End(kind, f"connect refused: {out.error}", out.error)
        return end

    def _deliver(self, event: Event) -> None:
        if isinstance(event, Connected):
            self._info = event.info
            if not self._ready.done():
                self._first_ok = event.info
        if isinstance(event, Publication):
            subs = self._subs.get(event.subject, [])
            self._subs[event.subject] = [s for s in subs if s._offer(event)]
        self._broadcast(event)

    def _broadcast(self, event: Event) -> None:
        if self._backlog is not None:
            if len(self._backlog) < _BACKLOG_CAP:
                self._backlog.append(event)
            else:
                log.warning("no event listener: early events discarded")
                self._backlog = None
        self._listeners = [s for s in self._listeners if s._offer(event)]

    # -- requests ---------------------------------------------------------------------

    def events(self) -> EventStream:
        """A new, independent stream of every event from now on. The first stream made also
        gets what arrived since ``connect`` (up to 10,000 events), starting with
        :class:`~herald.events.Connected`."""
        stream = EventStream(self.config.event_buffer)
        if self._stopped:
            stream._finish()
            return stream
        backlog, self._backlog = self._backlog or [], None
        if all(stream._offer(e) for e in backlog):
            self._listeners.append(stream)
        return stream

    async def request(self, op: str, **fields: Any) -> Any:
        """Sends any request and returns its raw ``ok``; raises the error reply as the
        :class:`~herald.errors.ServerError` subclass of its code."""
        if self._stopped or self._closing:
            raise ClosedError("client is closed")
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._apply(self._session.request({"op": op, **fields}, waiter))
        return await self._wait(waiter, op)

    async def _wait(self, waiter: asyncio.Future[Any], op: str) -> Any:
        timeout = self.config.request_timeout
        try:
            return await asyncio.wait_for(waiter, timeout)
        except asyncio.TimeoutError:
            raise RequestTimeoutError(f"{op}: no reply within {timeout} s") from None

    async def ping(self) -> None:
        """A round trip to the server."""
        await self.request("ping")

    async def refresh_token(self, token: str) -> str:
        """``auth.refresh``: the open connection lives on with ``token`` (same app and user);
        REST calls use it too. Returns its ``expires_at``."""
        ok = await self.request("auth.refresh", token=token)
        self._token = token
        expires = ok.get("expires_at") if isinstance(ok, dict) else None
        return expires if isinstance(expires, str) else ""

    async def subscribe(self, subject: str) -> Subscription:
        """Subscribes to a subject (renewed after every reconnect)."""
        if self._stopped or self._closing:
            raise ClosedError("client is closed")
        sub = Subscription(self, subject, self.config.event_buffer)
        self._subs.setdefault(subject, []).append(sub)
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._apply(self._session.subscribe(subject, waiter))
        try:
            await self._wait(waiter, "subscribe")
        except BaseException:
            # The local subscription goes again; the server holds none to remove.
            with contextlib.suppress(HeraldError):
                await sub.unsubscribe()
            raise
        return sub

    async def _unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.subject, [])
        if sub not in subs:
            return
        subs.remove(sub)
        if not subs:
            self._subs.pop(sub.subject, None)
        if self._stopped:
            return
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._apply(self._session.unsubscribe(sub.subject, waiter))
        await self._wait(waiter, "unsubscribe")

    async def publish(self, subject: str, data: Any) -> None:
        """Publishes JSON ``data`` to every subscriber of ``subject`` (this client too)."""
        await self.request("publish", subject=subject, data=data)

    # -- rooms ------------------------------------------------------------------------

    def room(self, channel: str) -> Room:
        """The room of a channel (its name or id) the user is a member of: ``enter`` it,
        then ``room.messaging`` sends, receives and streams (:mod:`herald.rooms`)."""
        return Room(self, channel)

    def _send_frame(self, frame: str | bytes) -> bool:
        """Queues a frame on the live connection; False when there is none (room requests
        are never held for a later connection: the participant would be gone)."""
        if self._outq is None or not self._session.is_ready or self._closing:
            return False
        self._outq.put_nowait(frame)
        return True

    async def _room_request(self, request: dict[str, Any], data: bytes | None) -> Any:
        if self._stopped or self._closing:
            raise ClosedError("client is closed")
        op = str(request.get("op"))
        return await self._wait(self._rooms.request(request, data), op)

    # -- channels ---------------------------------------------------------------------

    async def create_channel(
        self,
        name: str | None = None,
        *,
        title: str | None = None,
        members: list[str] | None = None,
        encrypted: bool = False,
        policy: str | None = None,
    ) -> Channel:
        """``channel.create``; a second create of one's own name is a harmless join."""
        fields: dict[str, Any] = {}
        if name is not None:
            fields["name"] = name
        if title is not None:
            fields["title"] = title
        if members:
            fields["members"] = members
        if encrypted:
            fields["encrypted"] = True
        if policy is not None:
            fields["policy"] = policy
        ok = await self.request("channel.create", **fields)
        return self._channel(ok)

    async def join(self, channel: str, *, auth: str | None = None) -> Channel:
        """``channel.join`` by name or id; ``auth`` is the backend's signature for a
        ``private-`` channel (:func:`herald.sign_channel` over :attr:`conn_id`)."""
        fields: dict[str, Any] = {"channel": channel}
        if auth is not None:
            fields["auth"] = auth
        return self._channel(await self.request("channel.join", **fields))

    async def channel(self, channel: str) -> Channel:
        """A handle to a channel the user is a member of, by name or id, without joining
        (REST ``GET /v1/channels/{id_or_name}``)."""
        info = await self.rest.channel_info(channel)
        return Channel(self, info.channel)

    def _channel(self, ok: Any) -> Channel:
        data = ChannelData.from_json(ok.get("channel") if isinstance(ok, dict) else None)
        return Channel(self, data)

    async def list_channels(self) -> list[ChannelSummary]:
        """``channel.list``: the user's channels with unread counts."""
        ok = await self.request("channel.list")
        return [ChannelSummary.from_json(c) for c in _items(ok, "channels")]

    async def directory(self) -> list[DirectoryEntry]:
        """``channel.directory``: every named channel of the app the user may join."""
        ok = await self.request("channel.directory")
        return [DirectoryEntry.from_json(c) for c in _items(ok, "channels")]

    async def delete_channel(self, channel: str) -> None:
        """``channel.delete`` (creator or ``channels:admin``)."""
        await self.request("channel.delete", channel=channel)

    def _anchor(self, channel: str, after: int) -> tuple[int, bytes] | None:
        return self._session.anchor(channel, after)

    def _chain_error(self, error: ChainError) -> None:
        self._deliver(ChainFailed(error))


def _items(ok: Any, key: str) -> list[Any]:
    items = ok.get(key) if isinstance(ok, dict) else None
    if not isinstance(items, list):
        raise ProtocolError(f"reply without a list {key!r}")
    return items


class Channel:
    """A channel the user is a member of, from ``create_channel``, ``join`` or ``channel``."""

    def __init__(self, client: Client, data: ChannelData) -> None:
        self.client = client
        self.data = data

    @property
    def id(self) -> str:
        return self.data.id

    @property
    def name(self) -> str | None:
        return self.data.name

    def __repr__(self) -> str:
        return f"Channel(id={self.id!r}, name={self.name!r})"

    async def send(
        self,
        content: str,
        *,
        type: str | None = None,
        reply_to: str | None = None,
        client_id: str | None = None,
        author: str | None = None,
        **extra: Any,
    ) -> Message:
        """``message.send``. A ``client_id`` is generated when none is given, so the send
        is resent after a reconnect and still appended at most once. ``author`` needs a
        token with the ``server`` grant; ``extra`` carries fields of later protocol
        versions (``epoch`` of an encrypted channel)."""
        fields: dict[str, Any] = {
            "channel": self.id,
            "content": content,
            "client_id": client_id or new_client_id(),
        }
        for key, value in (("type", type), ("reply_to", reply_to), ("author", author)):
            if value is not None:
                fields[key] = value
        fields.update(extra)
        ok = await self.client.request("message.send", **fields)
        return Message.from_json(ok.get("message") if isinstance(ok, dict) else None)

    async def edit(self, message_id: str, content: str, **extra: Any) -> Message:
        """``message.edit`` of one's own message."""
        ok = await self.client.request(
            "message.edit", channel=self.id, message_id=message_id, content=content, **extra
        )
        return Message.from_json(ok.get("message") if isinstance(ok, dict) else None)

    async def delete_message(self, message_id: str) -> None:
        """``message.delete``: a hard delete of one's own message."""
        await self.client.request("message.delete", channel=self.id, message_id=message_id)

    async def react(self, message_id: str, emoji: str) -> str:
        """``reaction.add``; returns the reaction id."""
        ok = await self.client.request(
            "reaction.add", channel=self.id, message_id=message_id, emoji=emoji
        )
        rid = ok.get("reaction_id") if isinstance(ok, dict) else None
        if not isinstance(rid, str):
            raise ProtocolError("reaction.add reply without reaction_id")
        return rid

    async def unreact(self, reaction_id: str) -> None:
        """``reaction.remove`` of one's own reaction."""
        await self.client.request("reaction.remove", channel=self.id, reaction_id=reaction_id)

    async def read(self, message_id: str) -> None:
        """``read``: marks everything up to ``message_id`` read."""
        await self.client.request("read", channel=self.id, message_id=message_id)

    async def typing(self, is_typing: bool = True) -> None:
        """``typing``: tells the other members."""
        await self.client.request("typing", channel=self.id, is_typing=is_typing)

    async def ephemeral(self, subject: str, data: Any) -> None:
        """``ephemeral``: an unstored signal to the other members."""
        await self.client.request("ephemeral", channel=self.id, subject=subject, data=data)

    async def leave(self) -> None:
        await self.client.request("channel.leave", channel=self.id)

    async def add_member(self, user: str) -> None:
        await self.client.request("channel.add_member", channel=self.id, user=user)

    async def remove_member(self, user: str) -> None:
        await self.client.request("channel.remove_member", channel=self.id, user=user)

    async def delete(self) -> None:
        await self.client.delete_channel(self.id)

    async def info(self) -> ChannelInfo:
        """The channel and its members (REST)."""
        return await self.client.rest.channel_info(self.id)

    async def history(
        self,
        *,
        limit: int | None = None,
        before: int | None = None,
        after: int | None = None,
        from_: str | None = None,
        to: str | None = None,
    ) -> HistoryPage:
        """One page of ``history``: newest first with ``before`` (or neither), oldest first
        with ``after``; ``from_``/``to`` bound the time (RFC 3339, inclusive)."""
        fields: dict[str, Any] = {"channel": self.id}
        for key, value in (
            ("limit", limit),
            ("before", before),
            ("after", after),
            ("from", from_),
            ("to", to),
        ):
            if value is not None:
                fields[key] = value
        return HistoryPage.from_json(await self.client.request("history", **fields))

    async def iter_history(
        self, *, after: int | None = None, page: int = 100
    ) -> AsyncIterator[Message]:
        """Every message, page by page: newest to oldest, or oldest to newest with
        ``after`` (``after=0`` from the first)."""
        if after is None:
            before: int | None = None
            while True:
                p = await self.history(limit=page, before=before)
                for m in p.messages:
                    yield m
                if not p.has_more or not p.messages:
                    return
                before = p.messages[-1].seq
        else:
            cursor = after
            while True:
                p = await self.history(limit=page, after=cursor)
                for m in p.messages:
                    yield m
                if not p.has_more or not p.messages:
                    return
                cursor = p.messages[-1].seq

    async def raw_log(self, after: int = 0, limit: int = 100) -> Any:
        """Raw log entries after ``after`` exactly as sent, NOT verified."""
        return await self.client.rest.log(self.id, after, limit)

    async def log(
        self, after: int = 0, limit: int = 100, *, anchor: tuple[int, bytes] | None = None
    ) -> LogPage:
        """Raw log entries after ``after``, verified link by link and against the chain head
        this client has verified where they meet (or ``anchor``). A broken link raises
        :class:`~herald.errors.ChainError` and is also delivered as ``ChainFailed``."""
        raw = await self.client.rest.log(self.id, after, limit)
        entries = _items(raw, "entries")
        known = anchor or self.client._anchor(self.id, after)
        try:
            verify_log_page(self.id, after, entries, known)
        except ChainError as e:
            self.client._chain_error(e)
            raise
        has_more = raw.get("has_more") if isinstance(raw, dict) else False
        return LogPage([LogEntry.from_json(e) for e in entries], bool(has_more))

    async def iter_log(self, after: int = 0, *, page: int = 100) -> AsyncIterator[LogEntry]:
        """Every log entry after ``after``, verified, each page anchored on the last."""
        anchor: tuple[int, bytes] | None = None
        while True:
            p = await self.log(after, page, anchor=anchor)
            for e in p.entries:
                yield e
            if not p.entries or not p.has_more:
                return
            last = p.entries[-1]
            after, anchor = last.seq, (last.seq, bytes.fromhex(last.hash))

    async def put_blob(self, data: bytes) -> BlobRef:
        """Uploads a blob (``PUT /v1/channels/{id}/blobs``)."""
        return await self.client.rest.put_blob(self.id, data)

    async def get_blob(self, blob_id: str) -> bytes:
        """Downloads a blob, checking that its bytes hash to ``blob_id``."""
        return await self.client.rest.get_blob(self.id, blob_id)


async def connect(
    url: str,
    token: str = "",
    *,
    token_provider: TokenProvider | None = None,
    config: ClientConfig | None = None,
) -> Client:
    """``await herald.connect(url, token)``: :meth:`Client.connect`."""
    return await Client.connect(url, token, token_provider=token_provider, config=config)

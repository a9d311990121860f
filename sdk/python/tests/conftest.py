"""Test support: a real ``herald serve`` started on port 0 with a temporary data directory,
and tokens minted with ``herald token``.

The binary comes from ``HERALD_BIN``, else ``${CARGO_TARGET_DIR:-<repo>/target}/debug/herald``
(``scripts/test-python.sh`` builds it first).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

import herald

REPO = Path(__file__).resolve().parents[3]
FIXTURES = Path(__file__).parent / "fixtures"

T = TypeVar("T")

# Every await on the network in the tests is bounded by this.
TIMEOUT = 15.0


def herald_bin() -> str:
    explicit = os.environ.get("HERALD_BIN")
    if explicit:
        return explicit
    target = Path(os.environ.get("CARGO_TARGET_DIR", str(REPO / "target")))
    return str(target / "debug" / "herald")


class HeraldServer:
    """A ``herald serve`` child process; :meth:`restart` brings it back on the same port
    and data directory."""

    def __init__(self, data: Path, extra: list[str] | None = None) -> None:
        self.data = data
        self.extra = extra or []
        self.port = 0
        self.addr = ""
        self.proc: subprocess.Popen[str] | None = None
        self.log: list[str] = []

    def start(self) -> None:
        binary = herald_bin()
        if not os.path.exists(binary):
            raise RuntimeError(f"no herald binary at {binary}: build it or set HERALD_BIN")
        env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
        env.setdefault("RUST_LOG", "info")
        self.proc = subprocess.Popen(
            [
                binary,
                "serve",
                "--data",
                str(self.data),
                "--listen",
                f"127.0.0.1:{self.port}",
                "--durability",
                "relaxed",
                "--rate-per-sec",
                "0",
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        found = threading.Event()

        def drain(stream: object) -> None:
            # Keeps reading so the child never blocks on a full pipe; the first line with
            # `listen=` tells the address.
            assert self.proc is not None
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self.log.append(line)
                if not found.is_set() and "listen=" in line:
                    self.addr = line.split("listen=", 1)[1].split()[0]
                    found.set()

        threading.Thread(target=drain, args=(None,), daemon=True).start()
        if not found.wait(30):
            self.stop()
            raise RuntimeError("herald serve did not report its address:\n" + "".join(self.log))
        self.port = int(self.addr.rsplit(":", 1)[1])

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def url(self) -> str:
        return f"http://{self.addr}"

    def token(
        self,
        sub: str,
        *,
        name: str | None = None,
        kind: str | None = None,
        grants: tuple[str, ...] = (),
        ttl: str = "1h",
    ) -> str:
        args = [herald_bin(), "token", "--data", str(self.data), "--sub", sub, "--ttl", ttl]
        if name:
            args += ["--name", name]
        if kind:
            args += ["--kind", kind]
        for g in grants:
            args += ["--grant", g]
        env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
        out = subprocess.run(args, capture_output=True, text=True, env=env, timeout=30)
        if out.returncode != 0:
            raise RuntimeError(f"herald token failed: {out.stderr}")
        return out.stdout.strip()

    async def client(self, sub: str, config: herald.ClientConfig | None = None) -> herald.Client:
        return await herald.Client.connect(self.url, self.token(sub), config=config or fast())


def fast() -> herald.ClientConfig:
    """Reconnects quickly, so a restart test does not wait for the default backoff."""
    return herald.ClientConfig(
        backoff_initial=0.05, backoff_max=0.5, backoff_jitter=0.0, request_timeout=TIMEOUT
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[HeraldServer]:
    s = HeraldServer(tmp_path / "data")
    s.start()
    yield s
    s.stop()


class Clients:
    """Connects clients for a test and closes them after it."""

    def __init__(self, server: HeraldServer) -> None:
        self.server = server
        self.made: list[herald.Client] = []

    async def __call__(self, sub: str, config: herald.ClientConfig | None = None) -> herald.Client:
        c = await within(self.server.client(sub, config))
        self.made.append(c)
        return c


@pytest.fixture
async def connect(server: HeraldServer) -> AsyncIterator[Clients]:
    clients = Clients(server)
    yield clients
    for c in clients.made:
        await c.close()


E = TypeVar("E", bound=herald.Event)


async def next_of(
    stream: herald.EventStream,
    cls: type[E],
    pred: Callable[[E], bool] = lambda _: True,
    *,
    skip: Callable[[herald.Event], None] | None = None,
) -> E:
    """The next event of ``stream`` of type ``cls`` matching ``pred``, within TIMEOUT; every
    event skipped on the way goes to ``skip``. A chain error on the way fails the test
    (unless a chain error is what is awaited)."""

    async def find() -> E:
        async for ev in stream:
            if isinstance(ev, herald.ChainFailed) and cls is not herald.ChainFailed:
                raise AssertionError(f"chain error: {ev.error}")
            if isinstance(ev, cls) and pred(ev):
                return ev
            if skip is not None:
                skip(ev)
        raise AssertionError(f"stream ended before a {cls.__name__}")

    return await asyncio.wait_for(find(), TIMEOUT)


async def within(aw: Awaitable[T]) -> T:
    return await asyncio.wait_for(aw, TIMEOUT)


@contextlib.asynccontextmanager
async def rewriting_proxy(upstream: str, original: bytes, forged: bytes) -> AsyncIterator[str]:
    """A TCP proxy to ``upstream`` that rewrites ``original`` into ``forged`` (same length)
    in every byte the server sends (frames are uncompressed and, server to client, unmasked)."""
    host, port = upstream.rsplit(":", 1)
    tasks: set[asyncio.Task[None]] = set()

    async def pump(r: asyncio.StreamReader, w: asyncio.StreamWriter, tamper: bool) -> None:
        try:
            while data := await r.read(1 << 20):
                w.write(data.replace(original, forged) if tamper else data)
                await w.drain()
        except ConnectionError:
            pass
        finally:
            w.close()

    async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        sr, sw = await asyncio.open_connection(host, int(port))
        for t in (pump(cr, sw, False), pump(sr, cw, True)):
            task = asyncio.create_task(t)
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    addr = srv.sockets[0].getsockname()
    try:
        yield f"http://{addr[0]}:{addr[1]}"
    finally:
        srv.close()
        for task in list(tasks):
            task.cancel()

"""Python and Rust end-to-end encryption together: the Rust SDK runs as the ``herald`` CLI,
a separate process with its own state file, against the same ``herald serve``. DMs both
ways, encrypted channels created on either side with members on both, a Python member
admitted by the Rust keeper while the creator is offline, a Python edit read by Rust,
tampering surfaced on the Rust side, and a state file written by Python that the Rust CLI
opens (and back)."""

from __future__ import annotations

import asyncio
import os
import queue
import subprocess
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from conftest import TIMEOUT, HeraldServer, fast, herald_bin, within
from herald import e2ee
from herald.e2ee import E2ee, StateKey

PASSPHRASE = "correct horse battery staple"
PASS = StateKey(passphrase=PASSPHRASE)


class Follow:
    """A long-running CLI process whose output lines are awaited with a timeout."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        for stream, tag in ((proc.stdout, ""), (proc.stderr, "stderr: ")):
            threading.Thread(target=self._drain, args=(stream, tag), daemon=True).start()

    def _drain(self, stream: object, tag: str) -> None:
        assert stream is not None
        for line in stream:  # type: ignore[attr-defined]
            self.lines.put(tag + str(line).rstrip("\n"))

    async def line(self, pred: Callable[[str], bool]) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT * 2
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"no matching line; saw {self.seen}")
            try:
                line = await asyncio.to_thread(self.lines.get, True, min(left, 1.0))
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    raise AssertionError(f"process ended; saw {self.seen}") from None
                continue
            self.seen.append(line)
            if pred(line):
                return line

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Cli:
    """``herald`` as a user with a Rust state file (``<user>.rs.state``)."""

    def __init__(self, server: HeraldServer, dir: Path) -> None:
        self.server = server
        self.dir = dir
        self.passfile = dir / "pass"
        self.passfile.write_text(PASSPHRASE + "\n")
        self.follows: list[Follow] = []

    def rust_state(self, user: str) -> Path:
        return self.dir / f"{user}.rs.state"

    def _cmd(
        self, user: str, args: tuple[str, ...], grants: tuple[str, ...], state: Path | None
    ) -> tuple[list[str], dict[str, str]]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
        env["HERALD_URL"] = self.server.url
        env["HERALD_TOKEN"] = self.server.token(user, grants=grants)
        cmd = [herald_bin(), *args, "--state", str(state or self.rust_state(user))]
        return [*cmd, "--passphrase-file", str(self.passfile)], env

    async def run(
        self,
        user: str,
        *args: str,
        grants: tuple[str, ...] = (),
        state: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        cmd, env = self._cmd(user, args, grants, state)
        return await asyncio.to_thread(
            subprocess.run, cmd, capture_output=True, text=True, env=env, timeout=TIMEOUT * 4
        )

    async def ok(
        self, user: str, *args: str, grants: tuple[str, ...] = (), state: Path | None = None
    ) -> str:
        out = await self.run(user, *args, grants=grants, state=state)
        assert out.returncode == 0, f"{user} {args} failed: {out.stderr}"
        return out.stdout

    def follow(self, user: str, *args: str, grants: tuple[str, ...] = ()) -> Follow:
        cmd, env = self._cmd(user, args, grants, None)
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        f = Follow(proc)
        self.follows.append(f)
        return f


@pytest.fixture
def cli(server: HeraldServer, tmp_path: Path) -> Iterator[Cli]:
    c = Cli(server, tmp_path)
    yield c
    for f in c.follows:
        f.stop()


@pytest.fixture
async def py(server: HeraldServer, tmp_path: Path) -> AsyncIterator[Callable[..., object]]:
    made: list[E2ee] = []

    async def open_(user: str, device: str | None = None, state: Path | None = None) -> E2ee:
        c = await within(
            E2ee.connect(
                server.url,
                server.token(user),
                state=state or tmp_path / f"{user}.py.state",
                key=PASS,
                device_id=device,
                config=fast(),
            )
        )
        made.append(c)
        return c

    yield open_
    for c in made:
        await c.close()


async def test_dms_between_python_and_rust(cli: Cli, py: Callable[..., object]) -> None:
    line = await cli.ok("grace", "device", "init", "--id", "grace-cli")
    assert line.startswith("grace-cli\t")
    ada = await py("ada", "ada-py")  # type: ignore[misc]
    assert isinstance(ada, E2ee)
    # Grace (Rust) is offline: the DM waits in her inbox, then her tail reads it.
    await within(ada.send_dm("grace", "from python, offline"))
    tail = cli.follow("grace", "dm", "tail")
    got = await tail.line(lambda s: not s.startswith("stderr:"))
    assert got.endswith("ada/ada-py: from python, offline"), got
    await within(ada.send_dm("grace", "from python, live"))
    got = await tail.line(lambda s: not s.startswith("stderr:"))
    assert got.endswith("ada/ada-py: from python, live"), got
    tail.stop()
    # And back: the Rust side answers on the session it created from Ada's pre-key message.
    dms = ada.dms()
    assert "sent to 1 devices" in await cli.ok("grace", "dm", "ada", "from rust")
    dm = await dms.next(TIMEOUT)
    assert isinstance(dm, e2ee.Dm)
    assert (dm.from_, dm.from_device, dm.text) == ("grace", "grace-cli", "from rust")
    # A fresh Rust device starts a session from a claimed key of the Python device.
    await cli.ok("bob", "device", "init", "--id", "bob-cli")
    await cli.ok("bob", "dm", "ada", "hello from bob")
    dm = await dms.next(TIMEOUT)
    assert isinstance(dm, e2ee.Dm)
    assert (dm.from_, dm.text) == ("bob", "hello from bob")


async def test_an_encrypted_channel_shared_by_python_and_rust(
    cli: Cli, py: Callable[..., object]
) -> None:
    grace = await py("grace", "grace-py")  # type: ignore[misc]
    assert isinstance(grace, E2ee)
    await cli.ok("ada", "device", "init", "--id", "ada-cli")

    # Created by Rust, with the Python member in its genesis.
    cid = await cli.ok("ada", "channel", "create", "plans", "--encrypted", "--member", "grace")
    assert len(cid.strip()) == 36
    await cli.ok("ada", "send", "plans", "from rust")
    gch = await within(grace.encrypted_channel("plans"))
    texts = [o.text for o in await within(gch.history()) if isinstance(o, e2ee.OpenedMessage)]
    assert texts == ["from rust"]
    await within(gch.send("from python"))
    history = await cli.ok("ada", "history", "plans")
    lines = history.strip().splitlines()
    assert lines[0].endswith("ada: from rust"), history
    assert lines[1].endswith("grace: from python"), history

    # Created by Python, with the Rust member in its genesis.
    pch = await within(grace.create_encrypted("py-plans", members=["ada"]))
    first = await within(pch.send("python genesis"))
    await cli.ok("ada", "send", "py-plans", "rust reply")
    history = await cli.ok("ada", "history", "py-plans")
    assert history.strip().splitlines()[0].endswith("grace: python genesis"), history
    texts = [o.text for o in await within(pch.history()) if isinstance(o, e2ee.OpenedMessage)]
    assert texts == ["python genesis", "rust reply"]
    # An edit sealed in Python opens in the Rust SDK's history as the message's content.
    await within(pch.edit(first.id, "python genesis, edited"))
    history = await cli.ok("ada", "history", "py-plans")
    assert history.strip().splitlines()[0].endswith("grace: python genesis, edited"), history

    # Live, Python to a Rust tail.
    tail = cli.follow("ada", "tail", "py-plans")
    await tail.line(lambda s: "following" in s)
    await within(pch.send("live to rust"))
    assert (await tail.line(lambda s: "live to rust" in s)).endswith("grace: live to rust")
    tail.stop()

    # Files both ways: put in Python, got by Rust; put by Rust, got in Python.
    data = bytes(i % 251 for i in range(300_000))
    fmsg, _ = await within(pch.put_file(data, "from-python.bin"))
    out = cli.dir / "got-by-rust.bin"
    await cli.ok("ada", "file", "get", "py-plans", fmsg.id, str(out))
    assert out.read_bytes() == data
    src = cli.dir / "from-rust.bin"
    src.write_bytes(data[::-1])
    rid = (await cli.ok("ada", "file", "put", "py-plans", str(src))).strip()
    rmsg = next(
        o for o in await within(pch.history()) if isinstance(o, e2ee.OpenedMessage) and o.id == rid
    )
    manifest = rmsg.file()
    assert manifest is not None
    assert manifest["name"] == "from-rust.bin"
    assert await within(pch.get_file(manifest)) == data[::-1]

    # An altered ciphertext under Grace's name: the Rust side says it cannot open it.
    good = await within(pch.send("pay alice 10"))
    body = good.content
    altered = body[:40] + ("A" if body[40] != "A" else "B") + body[41:]
    await within(pch.channel.send(altered, epoch=pch.epoch))
    last = (await cli.ok("ada", "history", "py-plans")).strip().splitlines()[-1]
    assert "cannot open" in last, last
    assert "signature" in last, last


async def test_a_python_member_is_admitted_by_the_rust_keeper(
    cli: Cli, py: Callable[..., object]
) -> None:
    keeper = cli.follow("keeper", "keeper", grants=("keeper",))
    await keeper.line(lambda s: "keeper device" in s and "ready" in s)
    await cli.ok("ada", "device", "init", "--id", "ada-cli")
    await cli.ok("ada", "channel", "create", "vault", "--encrypted")
    await cli.ok("ada", "send", "vault", "kept secret")
    # Ada is offline (each CLI command exits); Grace joins from Python.
    grace = await py("grace", "grace-py")  # type: ignore[misc]
    assert isinstance(grace, E2ee)
    gch = await within(grace.join_encrypted("vault"))
    await keeper.line(lambda s: s.startswith("admitted grace"))
    await within(gch.wait_for_keys(timeout=TIMEOUT))
    assert {m["user"] for m in gch.members()} >= {"ada", "grace", "keeper/keeper"}
    texts = [o.text for o in await within(gch.history()) if isinstance(o, e2ee.OpenedMessage)]
    assert texts == ["kept secret"]
    await within(gch.send("thanks, keeper"))
    history = await cli.ok("ada", "history", "vault")
    assert history.strip().splitlines()[-1].endswith("grace: thanks, keeper"), history


async def test_a_python_state_file_opens_in_the_rust_cli_and_back(
    cli: Cli, py: Callable[..., object], tmp_path: Path
) -> None:
    state = tmp_path / "ada.shared.state"
    grace = await py("grace", "grace-py")  # type: ignore[misc]
    ada = await py("ada", "ada-py", state)  # type: ignore[misc]
    assert isinstance(grace, E2ee)
    assert isinstance(ada, E2ee)
    ch = await within(ada.create_encrypted("shared", members=["grace"]))
    await within(ch.send("written by python"))
    await within(ada.send_dm("grace", "dm from python"))
    # While Python holds the device, the Rust CLI is refused the file (the same flock).
    busy = await cli.run("ada", "history", "shared", state=state)
    assert busy.returncode != 0
    assert "in use by another process" in busy.stderr, busy.stderr
    await ada.close()
    # The Rust CLI uses the very same device from the Python-written file.
    await cli.ok("ada", "send", "shared", "written by rust", state=state)
    history = await cli.ok("ada", "history", "shared", state=state)
    assert history.strip().splitlines()[0].endswith("ada: written by python"), history
    await cli.ok("ada", "dm", "grace", "dm from rust, same device", state=state)
    # And back in Python, with what Rust saved (the ratchet moved on there).
    ada = await py("ada", None, state)  # type: ignore[misc]
    assert isinstance(ada, E2ee)
    assert ada.device_id == "ada-py"
    ach = await within(ada.encrypted_channel("shared"))
    texts = [o.text for o in await within(ach.history()) if isinstance(o, e2ee.OpenedMessage)]
    assert texts == ["written by python", "written by rust"]
    dms = grace.dms()
    got = [await dms.next(TIMEOUT), await dms.next(TIMEOUT)]
    assert [d.text for d in got if isinstance(d, e2ee.Dm)] == [
        "dm from python",
        "dm from rust, same device",
    ]
    await within(ada.send_dm("grace", "python again"))
    last = await dms.next(TIMEOUT)
    assert isinstance(last, e2ee.Dm)
    assert last.text == "python again"

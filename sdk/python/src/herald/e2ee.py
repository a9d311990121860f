"""End-to-end encryption in the Python SDK: the Rust SDK's ``herald_client::e2ee`` behaviour
(docs/protocol.md §L), talking the same routes (§I), with every byte of crypto from the
Rust ``herald-crypto`` itself through its PyO3 binding (``herald_crypto``, the extension
built from ``crates/crypto-py`` into this package).

- :class:`E2ee`: a client with a device. ``connect`` opens (or creates) the device state,
  registers the device and tops up its one-time keys, then connects declaring it.
- Direct messages: :meth:`E2ee.send_dm`, and :meth:`E2ee.dms`, the inbox first, then live
  ones; each decrypted, the state saved, then acknowledged. A DM that cannot be read is
  yielded as :class:`DmFailure`, never dropped.
- Encrypted channels: :meth:`E2ee.create_encrypted`, :meth:`E2ee.join_encrypted`,
  :meth:`E2ee.encrypted_channel`; :class:`EncryptedChannel` seals (sends and edits), opens
  (signature, roster membership at the epoch, author, hash chain; messages, edited messages
  and live edits alike), adds and removes members with signed commits and envelopes, and
  puts and gets encrypted erasure-coded files. A message that cannot be opened is an
  :class:`Unopenable` with its reason, never dropped.
- :class:`Space`: the seed-shaped conveniences over encrypted channels named by topic.

The state file is the Rust SDK's: the ``HST1`` container of ``herald_crypto.StateSealer``
around the same JSON as ``crates/client/src/e2ee/state.rs``, so a state file written by one
SDK opens in the other. It is written atomically (``<file>.tmp``, fsync, rename, fsync of
the directory, mode 0600) and locked (``<file>.lock``, ``flock``) against a second process:
one device, one process, whichever SDK that process runs.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import fcntl
import json
import logging
import os
import secrets
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import blake3
import httpx

import herald_crypto as hc

from .client import Channel, Client, ClientConfig, Endpoint, EventStream, TokenProvider
from .errors import (
    ChannelNotFoundError,
    ConnectError,
    HeraldError,
    IntegrityError,
    NotFoundError,
    ProtocolError,
    ServerError,
    StaleEpochError,
)
from .events import Connected, MessageEdited, MessageEvent, UnknownEvent
from .models import Message
from .rest import Rest, segment

_T = TypeVar("_T")

log = logging.getLogger("herald.e2ee")

DEFAULT_ONE_TIME_KEYS = 50
HANDLED_DMS_MAX = 10_000
KEEPER_PREFIX = "keeper/"
FILE_TYPE = "herald.file"
_RETRIES = 5


# -- errors -----------------------------------------------------------------------------


class E2eeError(HeraldError):
    """An end-to-end encryption operation failed (the server's own errors keep their
    :class:`~herald.errors.ServerError` classes)."""


class IdentityChangedError(E2eeError):
    """A device pinned earlier now shows other identity keys (or another user): refused. If
    the change is expected, :meth:`E2ee.verify_device` with the new fingerprint, checked out
    of band, replaces the pin."""

    def __init__(self, user: str, device: str) -> None:
        super().__init__(
            f"identity of device {device!r} of {user!r} changed since it was pinned: "
            "refused (possible attack)"
        )
        self.user = user
        self.device = device


class FingerprintMismatchError(E2eeError):
    """The fingerprint given to :meth:`E2ee.verify_device` is not the device's key."""


class UnknownDeviceError(E2eeError):
    """A device is unknown to the server (or revoked), or is not the named user's."""

    def __init__(self, user: str, device: str) -> None:
        super().__init__(f"unknown device {device!r} of {user!r}")
        self.user = user
        self.device = device


class StateError(E2eeError):
    """The state file cannot be read, decrypted, locked or written."""


class EncryptedChannelError(E2eeError):
    """A channel is not encrypted, or its roster or keys do not allow the operation."""


class CryptoFailure(E2eeError):
    """A cryptographic check failed (a bad signature, a key that does not verify)."""


class UnopenableError(E2eeError):
    """A channel message cannot be opened (from :meth:`Space.decrypt_message_data`)."""

    def __init__(self, unopenable: Unopenable) -> None:
        super().__init__(f"unopenable message: {unopenable}")
        self.unopenable = unopenable


def _crypto(e: hc.CryptoError) -> CryptoFailure:
    return CryptoFailure(f"crypto: {e}")


# -- encodings --------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(s: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(s.rstrip("=") + "=" * (-len(s.rstrip("=")) % 4))
    except (binascii.Error, ValueError):
        return None


def _jwt_sub(token: str) -> str | None:
    parts = token.split(".")
    if len(parts) < 2:
        return None
    raw = _unb64(parts[1])
    if raw is None:
        return None
    try:
        claims = json.loads(raw)
    except ValueError:
        return None
    sub = claims.get("sub") if isinstance(claims, dict) else None
    return sub if isinstance(sub, str) and sub else None


def _same_user(provider: TokenProvider, user: str, first: str) -> TokenProvider:
    """``provider`` as the client calls it: the token already fetched for the first attempt
    (not asked twice in a row), then fresh ones, each checked to be ``user``'s."""
    pending: list[str] = [first]

    async def checked() -> str:
        token = pending.pop() if pending else await provider()
        sub = _jwt_sub(token)
        if sub != user:
            raise ProtocolError(f"the token provider gave a token of {sub!r}, not of {user!r}")
        return token

    return checked


def _j(v: Any) -> str:
    return json.dumps(v, separators=(",", ":"))


def fingerprint(identity: dict[str, Any]) -> str:
    """The fingerprint users compare out of band: lowercase hex of the device's Ed25519
    key, in groups of 4 (the Rust SDK's)."""
    raw = _unb64(str(identity.get("ed25519", ""))) or b""
    h = raw.hex()
    return " ".join(h[i : i + 4] for i in range(0, len(h), 4))


def _same_identity(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = ("device_id", "ed25519", "curve25519", "envelope")
    return all(a.get(k) == b.get(k) for k in keys)


# -- the state file ---------------------------------------------------------------------


class StateKey:
    """Where the state file's key comes from: a passphrase (Argon2id, salt in the file) or
    32 random bytes (:meth:`from_key_file`)."""

    def __init__(self, *, passphrase: str | None = None, key: bytes | None = None) -> None:
        if (passphrase is None) == (key is None):
            raise ValueError("give exactly one of passphrase and key")
        if key is not None and len(key) != 32:
            raise ValueError(f"a state key is 32 bytes, got {len(key)}")
        self._passphrase = passphrase
        self._key = key

    def __repr__(self) -> str:
        return "StateKey(passphrase=..)" if self._passphrase is not None else "StateKey(key=..)"

    @classmethod
    def from_passphrase(cls, passphrase: str) -> StateKey:
        return cls(passphrase=passphrase)

    @classmethod
    def from_key_file(cls, path: str | os.PathLike[str]) -> StateKey:
        """A key file: exactly 32 raw bytes, or 64 hex digits (whitespace around ignored)."""
        try:
            raw = Path(path).read_bytes()
        except OSError as e:
            raise StateError(f"cannot read key file {str(path)!r}: {e}") from e
        if len(raw) == 32:
            return cls(key=raw)
        try:
            text = raw.decode().strip()
            if len(text) == 64:
                return cls(key=bytes.fromhex(text))
        except ValueError:
            pass
        raise StateError(f"key file {str(path)!r} must hold 32 bytes or 64 hex digits")

    def _kw(self) -> dict[str, Any]:
        if self._passphrase is not None:
            return {"passphrase": self._passphrase}
        return {"key": self._key}


class _StateFile:
    """An opened state file: path, sealer (derived key), and the held lock."""

    def __init__(self, path: Path, sealer: hc.StateSealer, lock: int) -> None:
        self.path = path
        self.sealer = sealer
        self._lock = lock

    @classmethod
    def open(cls, path: Path, key: StateKey) -> tuple[_StateFile, dict[str, Any] | None]:
        lock = _lock(path)
        try:
            try:
                raw = path.read_bytes()
            except FileNotFoundError:
                try:
                    sealer = hc.StateSealer.create(**key._kw())
                except hc.CryptoError as e:
                    raise StateError(f"cannot derive the state key: {e}") from e
                return cls(path, sealer, lock), None
            except OSError as e:
                raise StateError(f"cannot read {str(path)!r}: {e}") from e
            try:
                sealer, plain = hc.StateSealer.open(raw, **key._kw())
            except hc.MismatchError as e:
                raise StateError(f"{str(path)!r} is encrypted with another kind of key: {e}") from e
            except hc.DecryptError as e:
                raise StateError(
                    f"cannot decrypt {str(path)!r}: wrong passphrase or key, "
                    "or the file was altered"
                ) from e
            except hc.CryptoError as e:
                raise StateError(f"{str(path)!r} is not a Herald device state file: {e}") from e
            try:
                state = json.loads(plain)
            except ValueError as e:
                raise StateError(f"unreadable state in {str(path)!r}: {e}") from e
            if not isinstance(state, dict):
                raise StateError(f"unreadable state in {str(path)!r}: not an object")
            return cls(path, sealer, lock), state
        except BaseException:
            os.close(lock)
            raise

    def key(self) -> bytes:
        return self.sealer.key()

    def save(self, state: dict[str, Any]) -> None:
        """Encrypts and writes ``state`` atomically."""
        out = self.sealer.seal(json.dumps(state, separators=(",", ":")).encode())
        tmp = self.path.with_suffix(".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                view = memoryview(out)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            d = os.open(self.path.parent if str(self.path.parent) else Path("."), os.O_RDONLY)
            try:
                with contextlib.suppress(OSError):
                    os.fsync(d)
            finally:
                os.close(d)
        except OSError as e:
            raise StateError(f"cannot write {str(self.path)!r}: {e}") from e

    def close(self) -> None:
        if self._lock >= 0:
            os.close(self._lock)
            self._lock = -1


def _lock(path: Path) -> int:
    """Takes ``<file>.lock`` exclusively (``flock``, as the Rust SDK's ``File::try_lock``)."""
    lock_path = path.with_suffix(".lock")
    try:
        fd = os.open(lock_path, os.O_WRONLY | os.O_CREAT, 0o600)
    except OSError as e:
        raise StateError(f"cannot open {str(lock_path)!r}: {e}") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StateError(
            f"{str(path)!r} is in use by another process: one device, one process at a time"
        ) from None
    except OSError as e:
        os.close(fd)
        raise StateError(f"cannot lock {str(lock_path)!r}: {e}") from e
    return fd


# -- live state -------------------------------------------------------------------------


@dataclass
class _Pin:
    user: str
    identity: dict[str, Any]
    identity_signature: bytes
    verified: bool = False

    def bundle(self) -> str:
        return _j(
            {
                "identity": self.identity,
                "identity_signature": _b64(self.identity_signature),
                "one_time_keys": [],
                "fallback_key": None,
            }
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "identity": self.identity,
            "identity_signature": self.identity_signature.hex(),
            "verified": self.verified,
        }


@dataclass
class _Channel:
    admins: list[dict[str, Any]]
    chain: hc.RosterChain
    keyring: hc.EpochKeyring
    commits: dict[int, dict[str, Any]]

    def members(self) -> list[dict[str, Any]]:
        m: list[dict[str, Any]] = json.loads(self.chain.members_json())
        return m

    def members_at(self, epoch: int) -> list[dict[str, Any]] | None:
        raw = self.chain.members_at_json(epoch)
        if raw is None:
            return None
        m: list[dict[str, Any]] = json.loads(raw)
        return m


@dataclass
class _Live:
    user: str
    device: hc.Device
    sessions: dict[str, list[hc.OlmSession]]
    pins: dict[str, _Pin]
    pinned: hc.PinnedDevices
    channels: dict[str, _Channel]
    handled_dms: deque[str]


def _load_live(p: dict[str, Any], key: bytes) -> _Live:
    try:
        device = hc.Device.from_pickle(str(p.get("device", "")), key)
        sessions: dict[str, list[hc.OlmSession]] = {}
        for peer, ss in dict(p.get("sessions") or {}).items():
            sessions[peer] = [hc.OlmSession.from_pickle(str(s), key) for s in ss]
        pins: dict[str, _Pin] = {}
        pinned = hc.PinnedDevices()
        for dev, pin in dict(p.get("pins") or {}).items():
            sig = bytes.fromhex(str(pin["identity_signature"]))
            pp = _Pin(str(pin["user"]), dict(pin["identity"]), sig, bool(pin.get("verified")))
            pinned.pin(pp.bundle())
            pins[dev] = pp
        channels: dict[str, _Channel] = {}
        for cid, c in dict(p.get("channels") or {}).items():
            commits_list = list(c.get("commits") or [])
            if not commits_list:
                continue
            admins = list(c.get("admins") or [])
            chain = hc.RosterChain(_j(admins), _j(commits_list[0]))
            by_epoch = {0: commits_list[0]}
            for sc in commits_list[1:]:
                chain.apply(_j(sc))
                by_epoch[int(sc["commit"]["epoch"])] = sc
            keyring = hc.EpochKeyring(cid)
            for epoch, k in dict(c.get("keys") or {}).items():
                kb = _unb64(str(k))
                if kb is None or len(kb) != 32:
                    raise StateError(f"bad key of epoch {epoch} in channel {cid}")
                keyring.insert(int(epoch), kb)
            channels[cid] = _Channel(admins, chain, keyring, by_epoch)
    except hc.CryptoError as e:
        raise StateError(f"device state does not verify: {e}") from e
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise StateError(f"unreadable device state: {e!r}") from e
    handled = deque(str(h) for h in (p.get("handled_dms") or []))
    return _Live(str(p.get("user", "")), device, sessions, pins, pinned, channels, handled)


# -- results ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Dm:
    """A decrypted direct message."""

    id: str
    from_: str
    from_device: str
    payload: bytes
    ts: str

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8", "replace")


@dataclass(frozen=True)
class DmFailure:
    """A direct message that could not be decrypted, and why (never dropped silently)."""

    id: str
    from_: str
    from_device: str
    reason: str
    # A failure of the network or the server: not acknowledged, it comes again later.
    transient: bool = False

    def __str__(self) -> str:
        return (
            f"direct message {self.id} from {self.from_}/{self.from_device} "
            f"cannot be read: {self.reason}"
        )


@dataclass(frozen=True)
class OpenedMessage:
    """A channel message opened and verified. ``edited_at`` is set when the content is an
    edit's (history shows a message's newest content): ``device`` and ``epoch`` are then
    those of the edit, which was opened with the same checks as a message."""

    id: str
    seq: int
    author: str
    device: str
    epoch: int
    type: str
    plaintext: bytes
    ts: str
    edited_at: str | None = None

    @property
    def text(self) -> str:
        return self.plaintext.decode("utf-8", "replace")

    def file(self) -> dict[str, Any] | None:
        """The file manifest a :meth:`EncryptedChannel.put_file` message carries."""
        if self.type != FILE_TYPE:
            return None
        try:
            v = json.loads(self.plaintext)
        except ValueError:
            return None
        m = v.get("manifest") if isinstance(v, dict) else None
        return m if isinstance(m, dict) else None


@dataclass(frozen=True)
class OpenedEdit:
    """A live edit (a ``message_edited`` event, :class:`~herald.events.MessageEdited`)
    opened and verified: ``message_id`` is the edited message, ``plaintext`` its new
    content, ``seq`` the edit's own log entry, ``author`` the editor (the server lets only
    a message's author edit it; history, :meth:`EncryptedChannel.verified_messages`, also
    checks the edit's author against the message's)."""

    message_id: str
    seq: int
    author: str
    device: str
    epoch: int
    plaintext: bytes
    edited_at: str

    @property
    def text(self) -> str:
        return self.plaintext.decode("utf-8", "replace")


# Why a message cannot be opened (the Rust SDK's UnopenableReason).
MALFORMED = "malformed"
NO_KEY = "no_key"
NOT_MEMBER = "not_member"
AUTHOR_MISMATCH = "author_mismatch"
BAD_SIGNATURE = "bad_signature"
IDENTITY = "identity"


@dataclass(frozen=True)
class Unopenable:
    """A message (or an edit of one) that could not be opened, and why: ``reason`` is one
    of ``malformed``, ``no_key``, ``not_member``, ``author_mismatch``, ``bad_signature``,
    ``identity``. ``edited_at`` is set when the content that failed is an edit's (an edited
    message of history, or a live edit: then ``seq`` is the edit's entry)."""

    message_id: str
    seq: int
    author: str
    reason: str
    detail: str
    edited_at: str | None = None

    def __str__(self) -> str:
        what = "message" if self.edited_at is None else "edit of message"
        return (
            f"{what} {self.message_id} (seq {self.seq}, by {self.author}): "
            f"{self.reason}: {self.detail}"
        )


Opened = OpenedMessage | Unopenable
# What :meth:`EncryptedChannel.events` yields: new messages and live edits, opened or not.
OpenedEvent = OpenedMessage | OpenedEdit | Unopenable


class _Refused(Exception):
    """Why sealed content does not open (inside :meth:`EncryptedChannel._unseal` only)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _is_transient(e: BaseException) -> bool:
    """A failure of the network or the server (the Rust SDK's ``E2eeError::Client``): the DM
    stays in the inbox for the next try."""
    return isinstance(e, HeraldError) and not isinstance(e, E2eeError)


def _owner_user(member: str) -> str:
    return member[len(KEEPER_PREFIX) :] if member.startswith(KEEPER_PREFIX) else member


# -- the client -------------------------------------------------------------------------


class E2ee:
    """A client with an E2EE device (see the module docs). ``client`` is the plain
    :class:`~herald.Client` underneath (everything else: subjects, plain channels, rooms)."""

    def __init__(
        self,
        client: Client,
        file: _StateFile,
        live: _Live,
        *,
        one_time_keys: int,
        min_one_time_keys: int,
    ) -> None:
        self.client = client
        self._file = file
        self._live = live
        self._one_time_keys = one_time_keys
        self._min_one_time_keys = min_one_time_keys

    def __repr__(self) -> str:
        return f"E2ee(device={self.device_id!r})"

    @classmethod
    async def connect(
        cls,
        url: str,
        token: str = "",
        *,
        token_provider: TokenProvider | None = None,
        state: str | os.PathLike[str],
        key: StateKey,
        device_id: str | None = None,
        config: ClientConfig | None = None,
        one_time_keys: int = DEFAULT_ONE_TIME_KEYS,
        min_one_time_keys: int = DEFAULT_ONE_TIME_KEYS // 2,
    ) -> E2ee:
        """Opens the state file (creating a device on first use: ``device_id``, else a
        random ``d-<16 hex>``), registers the device (``PUT /v1/keys/devices/{id}``, topping
        up its one-time keys when fewer than ``min_one_time_keys`` are left), then connects
        declaring it.

        With a ``token_provider`` (an async callable, as for :meth:`herald.Client.connect`)
        the token is asked of it: once here (its ``sub`` names the state's user, and it
        carries the registration), then at every reconnect and at 80% of each token's life
        (``auth.refresh``); ``token`` is then only the fallback should that first call fail.
        A token it returns for another user is refused (that attempt fails and is retried
        with backoff), so the device never speaks for someone else."""
        path = Path(state)
        if token_provider is not None:
            try:
                timeout = (config or ClientConfig()).connect_timeout
                token = await asyncio.wait_for(token_provider(), timeout)
            except Exception as e:
                if not token:
                    raise ConnectError(f"token provider failed: {e!r}") from e
                log.warning("token provider failed (%r); using the token given to connect", e)
        user = _jwt_sub(token)
        if user is None:
            raise ProtocolError("the token names no user (sub)")
        provider = None if token_provider is None else _same_user(token_provider, user, token)
        file, persisted = await asyncio.to_thread(_StateFile.open, path, key)
        try:
            if persisted is not None:
                if persisted.get("user") != user:
                    raise StateError(
                        f"{str(path)!r} belongs to user {persisted.get('user')!r}, "
                        f"the token is {user!r}'s"
                    )
                live = _load_live(persisted, file.key())
                fresh = False
            else:
                did = device_id or f"d-{secrets.token_hex(8)}"
                try:
                    device = hc.Device.generate(did)
                except hc.CryptoError as e:
                    raise _crypto(e) from e
                live = _Live(user, device, {}, {}, hc.PinnedDevices(), {}, deque())
                fresh = True
            config = config or ClientConfig()
            http = httpx.AsyncClient(
                timeout=config.request_timeout,
                trust_env=False,
                verify=config.ssl_context if config.ssl_context is not None else True,
            )
            base = Endpoint.parse(url).http
            try:
                rest = Rest(http, lambda: base, lambda: token)
                placeholder = cls.__new__(cls)
                placeholder._file = file
                placeholder._live = live
                placeholder._one_time_keys = one_time_keys
                placeholder._min_one_time_keys = min_one_time_keys
                if fresh:
                    # On disk before the keys are published: a crash after the upload must
                    # not lose the private halves of keys the server hands out.
                    placeholder._save()
                await placeholder._replenish(rest, at_start=True)
            finally:
                await http.aclose()
            config.device = live.device.device_id
            client = await Client.connect(url, token, token_provider=provider, config=config)
        except BaseException:
            file.close()
            raise
        return cls(
            client,
            file,
            live,
            one_time_keys=one_time_keys,
            min_one_time_keys=min_one_time_keys,
        )

    async def __aenter__(self) -> E2ee:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the connection and releases the state file's lock."""
        await self.client.close()
        self._file.close()

    @property
    def device_id(self) -> str:
        return self._live.device.device_id

    @property
    def user(self) -> str:
        return self._live.user

    @property
    def state_path(self) -> Path:
        return self._file.path

    @property
    def fingerprint(self) -> str:
        return fingerprint(json.loads(self._live.device.identity_keys_json()))

    @property
    def _rest(self) -> Rest:
        return self.client.rest

    # -- persistence ------------------------------------------------------------------

    def _save(self) -> None:
        """Writes the live state (the Rust SDK's ``Persisted`` JSON). Synchronous: no other
        task of the loop can change the state in between."""
        live = self._live
        key = self._file.key()
        channels: dict[str, Any] = {}
        for cid, c in live.channels.items():
            channels[cid] = {
                "admins": c.admins,
                "commits": [c.commits[e] for e in sorted(c.commits) if e <= c.chain.epoch],
                "keys": {str(e): _b64(c.keyring.get(e)) for e in c.keyring.epochs()},
            }
        state = {
            "user": live.user,
            "device_id": live.device.device_id,
            "device": live.device.pickle(key),
            "sessions": {
                peer: [s.pickle(key) for s in ss] for peer, ss in sorted(live.sessions.items())
            },
            "pins": {d: p.to_json() for d, p in sorted(live.pins.items())},
            "channels": dict(sorted(channels.items())),
            "handled_dms": list(live.handled_dms),
        }
        self._file.save(state)

    # -- devices and trust ------------------------------------------------------------

    async def list_devices(self, user: str) -> list[dict[str, Any]]:
        """``GET /v1/keys/users/{user}``: the user's current devices, unverified."""
        return await _list_devices(self._rest, user)

    async def revoke_device(self, device_id: str) -> None:
        """``DELETE /v1/keys/devices/{id}``."""
        await self._rest.json("DELETE", f"/v1/keys/devices/{segment(device_id)}")

    def pin_status(self, device: str) -> bool | None:
        """None when ``device`` is not pinned, else whether it was verified out of band."""
        p = self._live.pins.get(device)
        return None if p is None else p.verified

    async def verify_device(self, user: str, device: str, fingerprint_hex: str) -> None:
        """Checks ``fingerprint_hex`` against the key the server lists for ``device`` of
        ``user`` and pins it as verified (replacing a pin with other keys: the user checked
        the new one out of band)."""
        want = "".join(fingerprint_hex.split()).lower()
        info = next(
            (d for d in await self.list_devices(user) if d.get("device_id") == device), None
        )
        if info is None:
            raise UnknownDeviceError(user, device)
        identity = dict(info.get("identity") or {})
        found = (_unb64(str(identity.get("ed25519", ""))) or b"").hex()
        if found != want:
            raise FingerprintMismatchError(
                f"fingerprint of device {device!r} of {user!r} does not match: "
                f"expected {want}, the server shows {found}"
            )
        pin = _Pin(user, identity, _signature(info), True)
        live = self._live
        try:
            hc.verify_bundle(pin.bundle())
            old = live.pins.get(device)
            changed = old is not None and not _same_identity(old.identity, identity)
            live.pins[device] = pin
            if changed:
                pinned = hc.PinnedDevices()
                for p in live.pins.values():
                    pinned.pin(p.bundle())
                live.pinned = pinned
                live.sessions.pop(device, None)
            else:
                live.pinned.pin(pin.bundle())
        except hc.CryptoError as e:
            raise _crypto(e) from e
        self._save()

    async def _peer(self, user: str, device: str) -> dict[str, Any]:
        """The pinned identity of ``device`` of ``user`` (pinned on first sight)."""
        p = self._live.pins.get(device)
        if p is not None:
            if p.user != user:
                raise UnknownDeviceError(user, device)
            return p.identity
        await self._user_devices(user)
        p = self._live.pins.get(device)
        if p is None or p.user != user:
            raise UnknownDeviceError(user, device)
        return p.identity

    async def _user_devices(self, user: str) -> list[dict[str, Any]]:
        return self._pin_all(user, await _list_devices(self._rest, user))

    def _pin_all(self, user: str, devices: list[dict[str, Any]]) -> list[dict[str, Any]]:
        live = self._live
        out: list[dict[str, Any]] = []
        dirty = False
        for d in devices:
            did = str(d.get("device_id", ""))
            identity = d.get("identity")
            if not isinstance(identity, dict):
                raise ProtocolError(f"device {did!r} listed without identity keys")
            p = live.pins.get(did)
            if p is not None:
                if not _same_identity(p.identity, identity) or p.user != user:
                    raise IdentityChangedError(user, did)
            elif identity.get("device_id") != did:
                raise ProtocolError(
                    f"device {did!r} listed with the keys of device {identity.get('device_id')!r}"
                )
            else:
                pin = _Pin(user, identity, _signature(d))
                try:
                    live.pinned.pin(pin.bundle())
                except hc.CryptoError as e:
                    raise _crypto(e) from e
                live.pins[did] = pin
                dirty = True
            out.append(live.pins[did].identity)
        if dirty:
            self._save()
        return out

    async def replenish_one_time_keys(self) -> None:
        """Tops up this device's one-time keys when fewer than ``min_one_time_keys`` are
        left."""
        await self._replenish(self._rest, at_start=False)

    async def _replenish(self, rest: Rest, *, at_start: bool) -> None:
        live = self._live
        did = live.device.device_id
        listed = await _list_devices(rest, live.user)
        mine = next((d for d in listed if d.get("device_id") == did), None)
        if mine is None:
            if not at_start:
                raise UnknownDeviceError(live.user, did)
            count = 0
        else:
            left = mine.get("one_time_keys")
            count = left if isinstance(left, int) else 0
            if count >= self._min_one_time_keys:
                return
        want = max(self._one_time_keys - count, 1)
        bundle = live.device.publish_bundle(want)
        # Saved before the upload: the account now holds the private halves.
        self._save()
        await rest.json(
            "PUT", f"/v1/keys/devices/{segment(did)}", json={"bundle": json.loads(bundle)}
        )

    # -- direct messages --------------------------------------------------------------

    async def send_dm(self, user: str, payload: bytes | str) -> list[str]:
        """Encrypts ``payload`` to every current device of ``user`` and this user's other
        devices (sessions from claimed one-time keys where there is none) and sends it with
        one ``dm.send``: the ids of the copies. Fails if an identity changed since it was
        pinned, or a claimed key does not verify."""
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        me = self.user
        targets = [(user, i) for i in await self._user_devices(user)]
        if user != me:
            targets += [(me, i) for i in await self._user_devices(me)]
        targets = [(u, i) for u, i in targets if i.get("device_id") != self.device_id]
        if not targets:
            raise EncryptedChannelError(f"{user!r} has no device to send to")
        await self._ensure_sessions(targets)
        to: list[dict[str, Any]] = []
        for u, identity in targets:
            did = str(identity["device_id"])
            ss = self._live.sessions.get(did)
            if not ss:
                continue
            to.append({"user": u, "device_id": did, "body": ss[-1].encrypt(data)})
        # The ratchets moved: on disk before the ciphertexts leave.
        self._save()
        if not to:
            raise EncryptedChannelError(f"no session with any device of {user!r}")
        ok = await self.client.request("dm.send", to=to, client_id=secrets.token_hex(12))
        ids = ok.get("ids") if isinstance(ok, dict) else None
        if not isinstance(ids, list):
            raise ProtocolError("dm.send answer without ids")
        return [str(i) for i in ids]

    async def _ensure_sessions(self, targets: list[tuple[str, dict[str, Any]]]) -> None:
        missing = [
            {"user": u, "device_id": i["device_id"]}
            for u, i in targets
            if not self._live.sessions.get(str(i["device_id"]))
        ]
        if not missing:
            return
        v = await self._rest.json("POST", "/v1/keys/claim", json={"devices": missing})
        claimed = v.get("claimed") if isinstance(v, dict) else None
        if not isinstance(claimed, list):
            raise ProtocolError("unreadable claim answer")
        live = self._live
        for c in claimed:
            if not isinstance(c, dict):
                raise ProtocolError("unreadable claim answer")
            pinned = next(
                (
                    i
                    for u, i in targets
                    if u == c.get("user") and i.get("device_id") == c.get("device_id")
                ),
                None,
            )
            if pinned is None:
                continue
            if not _same_identity(pinned, dict(c.get("identity") or {})):
                raise IdentityChangedError(str(c.get("user")), str(c.get("device_id")))
            # The key's signature by the pinned device is verified: a swapped key fails.
            try:
                session = live.device.create_outbound_session(_j(pinned), _j(c.get("key")))
            except hc.CryptoError as e:
                raise _crypto(e) from e
            live.sessions.setdefault(str(c["device_id"]), []).append(session)
        self._save()

    def dms(self) -> DmStream:
        """This device's direct messages: first its inbox on the server (oldest first), then
        live ones. Each is acknowledged after it was decrypted and the state saved; one that
        cannot be decrypted is yielded as :class:`DmFailure` (and acknowledged: it never will
        decrypt), except after a network failure, when it stays in the inbox."""
        return DmStream(self, self.client.events())

    def _handled(self, dm_id: str) -> bool:
        return dm_id in self._live.handled_dms

    async def _open_dm(self, dm: dict[str, Any]) -> bytes:
        identity = await self._peer(str(dm["from"]), str(dm["from_device"]))
        body = str(dm.get("body", ""))
        try:
            msg = json.loads(body)
            pre_key = bool(msg.get("pre_key"))
        except (ValueError, AttributeError) as e:
            raise ProtocolError(f"malformed olm message: {e}") from e
        live = self._live
        sessions = live.sessions.setdefault(str(dm["from_device"]), [])
        plain: bytes | None = None
        created = False
        error: E2eeError | None = None
        # Newest session first: the one the peer most likely used.
        for s in reversed(sessions):
            try:
                if pre_key and not s.matches(body):
                    continue
                plain = s.decrypt(body)
                break
            except hc.CryptoError:
                continue
        if plain is None:
            if pre_key:
                try:
                    session, plain = live.device.create_inbound_session(_j(identity), body)
                    sessions.append(session)
                    created = True
                except hc.CryptoError as e:
                    error = _crypto(e)
            else:
                error = EncryptedChannelError(
                    "no Olm session decrypts it (a message of a session this device does not have)"
                )
        live.handled_dms.append(str(dm["id"]))
        while len(live.handled_dms) > HANDLED_DMS_MAX:
            live.handled_dms.popleft()
        self._save()
        if created:
            # A one-time key was used up: top up if few are left. A failure here must not
            # lose the message; the next start tries again.
            try:
                await self.replenish_one_time_keys()
            except HeraldError as e:
                log.warning("one-time key top-up failed: %s", e)
        if error is not None:
            raise error
        assert plain is not None
        return plain

    async def _ack(self, dm_id: str) -> None:
        await self.client.request("dm.ack", ids=[dm_id])

    async def _fetch_inbox(self) -> list[dict[str, Any]]:
        v = await self._rest.json("GET", "/v1/dm/inbox", params={"device": self.device_id})
        dms = v.get("dms") if isinstance(v, dict) else None
        if dms is None:
            return []
        if not isinstance(dms, list) or not all(_is_raw_dm(d) for d in dms):
            raise ProtocolError("unreadable inbox")
        return dms

    # -- encrypted channels -----------------------------------------------------------

    async def create_encrypted(
        self, name: str | None = None, *, members: list[str] | None = None
    ) -> EncryptedChannel:
        """Creates an encrypted channel with its genesis commit, signed by this device,
        listing the caller's and ``members``' devices and every keeper device, the epoch-0
        key sealed to each. A second create of one's own name returns the channel, synced."""
        members = members or []
        channel = await self.client.create_channel(name, members=members, encrypted=True)
        ch = EncryptedChannel(self, channel)
        cid = ch.id
        me = self.user
        roster = [{"user": me, "devices": [i["device_id"] for i in await self._user_devices(me)]}]
        for m in members:
            if m == me:
                continue
            roster.append(
                {"user": m, "devices": [i["device_id"] for i in await self._user_devices(m)]}
            )
        roster += await self._keeper_members()
        identities = await self._member_identities(roster)
        live = self._live
        try:
            genesis = json.loads(hc.sign_commit(hc.genesis_commit(cid, _j(roster)), live.device))
            admins = [json.loads(live.device.identity_keys_json())]
            for entry in roster:
                if str(entry["user"]).startswith(KEEPER_PREFIX):
                    admins += [i for i in identities if i["device_id"] in entry["devices"]]
            key = hc.generate_epoch_key()
            envelopes = self._seal_to(cid, 0, key, identities)
            body = {
                "epoch": 0,
                "prev_commit_hash": "0" * 64,
                "commit_hash": hc.commit_hash(_j(genesis)).hex(),
                "commit": genesis,
                "envelopes": [{"device_id": d, "envelope": e} for d, e in envelopes],
            }
        except hc.CryptoError as e:
            raise _crypto(e) from e
        try:
            await self._rest.json("POST", f"/v1/channels/{segment(cid)}/commits", json=body)
        except StaleEpochError:
            # The channel had a roster already (a second create of one's own name).
            await ch.sync()
            return ch
        try:
            chain = hc.RosterChain(_j(admins), _j(genesis))
            keyring = hc.EpochKeyring(cid)
            keyring.insert(0, key)
        except hc.CryptoError as e:
            raise _crypto(e) from e
        live.channels[cid] = _Channel(admins, chain, keyring, {0: genesis})
        self._save()
        return ch

    async def join_encrypted(self, channel: str) -> EncryptedChannel:
        """Joins an encrypted channel (its keys may come later, from the keeper:
        :meth:`EncryptedChannel.wait_for_keys`)."""
        ch = await self.client.join(channel)
        if not ch.data.encrypted:
            raise EncryptedChannelError(f"channel {ch.id!r} is not encrypted")
        return EncryptedChannel(self, ch)

    async def encrypted_channel(self, channel: str) -> EncryptedChannel:
        """A handle to an encrypted channel the user is a member of (by name or id)."""
        ch = await self.client.channel(channel)
        if not ch.data.encrypted:
            raise EncryptedChannelError(f"channel {ch.id!r} is not encrypted")
        return EncryptedChannel(self, ch)

    def space(self) -> Space:
        """The seed-shaped conveniences (:class:`Space`)."""
        return Space(self)

    def _seal_to(
        self, channel: str, epoch: int, key: bytes, to: list[dict[str, Any]]
    ) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for r in to:
            if r.get("device_id") == self.device_id:
                continue
            env = hc.seal_epoch_key(self._live.device, channel, epoch, key, _j(r))
            out.append((str(r["device_id"]), json.loads(env)))
        return out

    async def _keeper_members(self) -> list[dict[str, Any]]:
        v = await self._rest.json("GET", "/v1/keys/keepers")
        devices = v.get("devices") if isinstance(v, dict) else None
        if not isinstance(devices, list):
            raise ProtocolError("unreadable keeper list")
        by_user: dict[str, list[dict[str, Any]]] = {}
        for d in devices:
            if isinstance(d, dict) and isinstance(d.get("user"), str):
                by_user.setdefault(d["user"], []).append(d)
        out = []
        for user in sorted(by_user):
            ids = self._pin_all(user, by_user[user])
            out.append({"user": KEEPER_PREFIX + user, "devices": [i["device_id"] for i in ids]})
        return out

    async def _member_identities(self, members: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for m in members:
            for d in m["devices"]:
                out.append(await self._peer(_owner_user(str(m["user"])), str(d)))
        return out

    async def _post_commit(
        self, channel: str, members: list[dict[str, Any]], reason: dict[str, Any]
    ) -> bool:
        """Signs and posts the next epoch's commit with ``members`` and a fresh key sealed to
        each of their devices. False when another commit won the race (``stale_epoch``)."""
        identities = await self._member_identities(members)
        live = self._live
        c = live.channels.get(channel)
        if c is None:
            raise EncryptedChannelError(f"channel {channel} has no roster here")
        try:
            commit = json.loads(
                hc.sign_commit(c.chain.next_commit(_j(members), _j(reason)), live.device)
            )
            epoch = int(commit["commit"]["epoch"])
            key = hc.generate_epoch_key()
            # Dry run: a commit this chain would refuse must not become the head.
            try:
                c.chain.copy().apply(_j(commit))
            except hc.CryptoError as e:
                raise EncryptedChannelError(
                    f"this device cannot commit to channel {channel}: {e}"
                ) from e
            envelopes = self._seal_to(channel, epoch, key, identities)
            body = {
                "epoch": epoch,
                "prev_commit_hash": commit["commit"]["prev_commit_hash"],
                "commit_hash": hc.commit_hash(_j(commit)).hex(),
                "commit": commit,
                "envelopes": [{"device_id": d, "envelope": e} for d, e in envelopes],
            }
        except hc.CryptoError as e:
            raise _crypto(e) from e
        try:
            await self._rest.json("POST", f"/v1/channels/{segment(channel)}/commits", json=body)
        except StaleEpochError:
            return False
        c = live.channels.get(channel)
        if c is not None:
            try:
                if c.chain.epoch + 1 == epoch:
                    c.chain.apply(_j(commit))
                    c.commits[epoch] = commit
                c.keyring.insert(epoch, key)
            except hc.CryptoError as e:
                raise _crypto(e) from e
        self._save()
        return True

    async def _sync_channel(self, channel: str, created_by: str) -> None:
        """Fetches new commits (each verified to extend the chain) and this device's
        envelopes."""
        c = self._live.channels.get(channel)
        head = c.chain.epoch if c is not None else None
        params = {"after": head} if head is not None else None
        v = await self._rest.json("GET", f"/v1/channels/{segment(channel)}/commits", params=params)
        rows = v.get("commits") if isinstance(v, dict) else None
        if not isinstance(rows, list) or not all(
            isinstance(r, dict)
            and isinstance(r.get("epoch"), int)
            and isinstance(r.get("commit"), dict)
            for r in rows
        ):
            raise ProtocolError("unreadable commits")
        if head is None:
            if not rows:
                raise EncryptedChannelError(f"channel {channel} has no roster commit yet")
            genesis = rows.pop(0)["commit"]
            gc = genesis.get("commit") if isinstance(genesis.get("commit"), dict) else {}
            if gc.get("channel") != channel:
                raise EncryptedChannelError(
                    f"channel {channel}: the genesis commit is for channel {gc.get('channel')!r}"
                )
            signer = genesis.get("signer")
            owner = next(
                (
                    str(m.get("user"))
                    for m in gc.get("members") or []
                    if isinstance(m, dict)
                    and signer in (m.get("devices") or [])
                    and not str(m.get("user")).startswith(KEEPER_PREFIX)
                ),
                None,
            )
            if owner is None:
                raise EncryptedChannelError(
                    f"channel {channel}: the genesis signer is not in its roster"
                )
            if created_by and owner != created_by:
                raise EncryptedChannelError(
                    f"channel {channel}: genesis signed by {owner!r}, "
                    f"but {created_by!r} created the channel"
                )
            admins = [await self._peer(owner, str(signer))]
            for m in gc.get("members") or []:
                u = str(m.get("user"))
                if u.startswith(KEEPER_PREFIX):
                    for d in m.get("devices") or []:
                        admins.append(await self._peer(u[len(KEEPER_PREFIX) :], str(d)))
            try:
                chain = hc.RosterChain(_j(admins), _j(genesis))
                keyring = hc.EpochKeyring(channel)
            except hc.CryptoError as e:
                raise _crypto(e) from e
            self._live.channels.setdefault(channel, _Channel(admins, chain, keyring, {0: genesis}))
        c = self._live.channels.get(channel)
        if c is not None:
            for row in rows:
                if row["epoch"] <= c.chain.epoch:
                    continue
                try:
                    c.chain.apply(_j(row["commit"]))
                except hc.CryptoError as e:
                    self._save()
                    raise _crypto(e) from e
                c.commits[int(row["epoch"])] = row["commit"]
        self._save()
        await self._fetch_envelopes(channel)

    async def _fetch_envelopes(self, channel: str) -> None:
        v = await self._rest.json(
            "GET",
            f"/v1/channels/{segment(channel)}/envelopes",
            params={"device": self.device_id},
        )
        rows = v.get("envelopes") if isinstance(v, dict) else None
        if not isinstance(rows, list):
            raise ProtocolError("unreadable envelopes")
        for row in rows:
            if not isinstance(row, dict) or not isinstance(row.get("envelope"), dict):
                raise ProtocolError("unreadable envelopes")
            env = row["envelope"]
            c = self._live.channels.get(channel)
            if c is None:
                return
            epoch = row.get("epoch")
            if (
                not isinstance(epoch, int)
                or c.keyring.contains(epoch)
                or env.get("epoch") != epoch
                or epoch not in c.commits
            ):
                # Held already, inconsistent, or for an epoch whose commit is not verified.
                continue
            # Who sealed it: a device of the roster (any verified epoch) or an admin.
            owner = None
            for sc in c.commits.values():
                for m in sc["commit"]["members"]:
                    if env.get("sender") in m["devices"]:
                        owner = _owner_user(str(m["user"]))
            if owner is None:
                log.warning(
                    "envelope of channel %s epoch %s from a device outside the roster ignored",
                    channel,
                    epoch,
                )
                continue
            try:
                sender = await self._peer(owner, str(env.get("sender")))
            except HeraldError as e:
                log.warning("envelope sender unknown; ignored (channel %s): %s", channel, e)
                continue
            if env.get("channel") != channel:
                log.warning("envelope for another channel ignored (channel %s)", channel)
                continue
            try:
                key = hc.open_envelope(_j(env), self._live.device, _j(sender))
                c.keyring.insert(epoch, key)
            except hc.CryptoError as e:
                log.warning("envelope of channel %s epoch %s does not open: %s", channel, epoch, e)
        self._save()

    async def _rotate_without(self, channel: str, created_by: str, user: str) -> None:
        for _ in range(_RETRIES):
            await self._sync_channel(channel, created_by)
            c = self._live.channels.get(channel)
            if c is None:
                return
            members = c.members()
            if not any(m["user"] == user for m in members):
                return
            rest = [m for m in members if m["user"] != user]
            if await self._post_commit(channel, rest, {"kind": "remove", "users": [user]}):
                return
        raise EncryptedChannelError("removal commit lost the race 5 times")

    async def _admit(self, channel: str, created_by: str, user: str, reseal: bool) -> None:
        devices = sorted({str(i["device_id"]) for i in await self._user_devices(user)})
        if not devices:
            return
        changed = False
        for _ in range(_RETRIES):
            await self._sync_channel(channel, created_by)
            c = self._live.channels.get(channel)
            if c is None:
                return
            members = c.members()
            current = next((m for m in members if m["user"] == user), None)
            if current is not None and sorted(set(current["devices"])) == devices:
                break
            if current is not None:
                members = [
                    {"user": user, "devices": devices} if m["user"] == user else m for m in members
                ]
                reason: dict[str, Any] = {"kind": "rotate"}
            else:
                members = [*members, {"user": user, "devices": devices}]
                reason = {"kind": "add", "users": [user]}
            if await self._post_commit(channel, members, reason):
                changed = True
                break
        if not changed and not reseal:
            return
        # History: every key held, sealed to the user's devices.
        identities = [await self._peer(user, d) for d in devices]
        c = self._live.channels.get(channel)
        if c is None:
            return
        envelopes = []
        try:
            for epoch in c.keyring.epochs():
                key = c.keyring.get(epoch)
                for did, env in self._seal_to(channel, epoch, key, identities):
                    envelopes.append({"device_id": did, "epoch": epoch, "envelope": env})
        except hc.CryptoError as e:
            raise _crypto(e) from e
        for i in range(0, len(envelopes), 200):
            await self._rest.json(
                "POST",
                f"/v1/channels/{segment(channel)}/envelopes",
                json={"envelopes": envelopes[i : i + 200]},
            )


def _signature(d: dict[str, Any]) -> bytes:
    sig = _unb64(str(d.get("identity_signature", "")))
    if sig is None or len(sig) != 64:
        raise ProtocolError(f"device {d.get('device_id')!r} listed with a malformed signature")
    return sig


def _is_raw_dm(d: Any) -> bool:
    return isinstance(d, dict) and all(
        isinstance(d.get(k), str) for k in ("id", "from", "from_device", "body")
    )


async def _list_devices(rest: Rest, user: str) -> list[dict[str, Any]]:
    v = await rest.json("GET", f"/v1/keys/users/{segment(user)}")
    devices = v.get("devices") if isinstance(v, dict) else None
    if not isinstance(devices, list) or not all(isinstance(d, dict) for d in devices):
        raise ProtocolError("unreadable device list")
    return devices


class DmStream(AsyncIterator[Dm | DmFailure]):
    """Decrypted direct messages (or why one cannot be read), from :meth:`E2ee.dms`."""

    def __init__(self, e2ee: E2ee, events: EventStream) -> None:
        self._e2ee = e2ee
        self._events = events
        self._queue: deque[dict[str, Any]] = deque()
        self._inbox_fetched = False

    def __aiter__(self) -> DmStream:
        return self

    async def next(self, timeout: float | None = None) -> Dm | DmFailure:
        """The next one, within ``timeout`` seconds (``TimeoutError`` otherwise)."""
        return await asyncio.wait_for(self.__anext__(), timeout)

    async def __anext__(self) -> Dm | DmFailure:
        e2ee = self._e2ee
        if not self._inbox_fetched:
            try:
                self._queue.extend(await e2ee._fetch_inbox())
                self._inbox_fetched = True
            except HeraldError as e:
                # Live events still flow; the inbox is fetched again on the next call.
                log.warning("cannot fetch the DM inbox: %s", e)
        while True:
            if self._queue:
                dm = self._queue.popleft()
            else:
                dm = await self._next_live()
            dm_id = str(dm["id"])
            if e2ee._handled(dm_id):
                # Already read (the ack may have been lost): ack again, skip.
                with contextlib.suppress(HeraldError):
                    await e2ee._ack(dm_id)
                continue
            try:
                payload = await e2ee._open_dm(dm)
                failure: str | None = None
            except HeraldError as e:
                failure = str(e)
                if _is_transient(e):
                    with contextlib.suppress(ValueError):
                        e2ee._live.handled_dms.remove(dm_id)
                    return DmFailure(
                        dm_id, str(dm["from"]), str(dm["from_device"]), failure, transient=True
                    )
            try:
                await e2ee._ack(dm_id)
            except HeraldError as e:
                log.warning("dm.ack failed (redelivery is skipped): %s", e)
            if failure is not None:
                return DmFailure(dm_id, str(dm["from"]), str(dm["from_device"]), failure)
            return Dm(
                dm_id, str(dm["from"]), str(dm["from_device"]), payload, str(dm.get("ts", ""))
            )

    async def _next_live(self) -> dict[str, Any]:
        async for ev in self._events:
            if isinstance(ev, Connected):
                continue
            if isinstance(ev, UnknownEvent) and ev.name == "dm" and _is_raw_dm(ev.raw):
                return ev.raw
        raise StopAsyncIteration


class EncryptedChannel:
    """An encrypted channel: sends sealed, opens what it reads. ``channel`` is the plain
    handle (reactions, receipts, typing: plaintext metadata)."""

    def __init__(self, e2ee: E2ee, channel: Channel) -> None:
        self.e2ee = e2ee
        self.channel = channel

    def __repr__(self) -> str:
        return f"EncryptedChannel(id={self.id!r}, name={self.channel.name!r})"

    @property
    def id(self) -> str:
        return self.channel.id

    @property
    def _created_by(self) -> str:
        return self.channel.data.created_by

    async def sync(self) -> None:
        """Fetches new roster commits (each verified) and this device's key envelopes."""
        await self.e2ee._sync_channel(self.id, self._created_by)

    @property
    def epoch(self) -> int | None:
        """The verified head epoch, if the roster is known here."""
        c = self.e2ee._live.channels.get(self.id)
        return None if c is None else c.chain.epoch

    def key_epochs(self) -> list[int]:
        c = self.e2ee._live.channels.get(self.id)
        return [] if c is None else c.keyring.epochs()

    def members(self) -> list[dict[str, Any]]:
        """The head epoch's members (``{user, devices}``; keepers as ``keeper/<id>``)."""
        c = self.e2ee._live.channels.get(self.id)
        return [] if c is None else c.members()

    async def wait_for_keys(self, epoch: int | None = None, timeout: float = 15.0) -> None:
        """Syncs until the key of ``epoch`` (the head's if None) is here, or ``timeout``
        passes (``EncryptedChannelError``). Wakes on every event of the connection, and at
        least every 0.2 s, since envelopes arrive without an event of their own."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        events = self.e2ee.client.events()
        try:
            while True:
                with contextlib.suppress(EncryptedChannelError):
                    await self.sync()
                c = self.e2ee._live.channels.get(self.id)
                if c is not None and c.keyring.contains(c.chain.epoch if epoch is None else epoch):
                    return
                left = deadline - loop.time()
                if left <= 0:
                    raise EncryptedChannelError(f"no key for channel {self.id} within {timeout} s")
                with contextlib.suppress(asyncio.TimeoutError, StopAsyncIteration):
                    await asyncio.wait_for(events.__anext__(), min(left, 0.2))
        finally:
            events.close()

    async def send(self, plaintext: bytes | str, *, type: str | None = None) -> Message:
        """Seals ``plaintext`` with the head epoch's key and sends it (``message.send``
        with ``epoch``); ``type`` is plaintext metadata. On ``stale_epoch`` it syncs and
        seals again (up to 5 times)."""
        client_id = secrets.token_hex(12)

        async def send(epoch: int, content: str) -> Message:
            return await self.channel.send(content, type=type, client_id=client_id, epoch=epoch)

        return await self._sealed(plaintext, send)

    async def edit(self, message_id: str, plaintext: bytes | str) -> Message:
        """Replaces the content of one's own message ``message_id`` with ``plaintext``,
        sealed exactly as :meth:`send` seals (this device, the head epoch's key), in a
        ``message.edit`` with ``epoch``; on ``stale_epoch`` it syncs and seals again (up to 5
        times). The server lets only the author edit: anyone else gets
        :class:`~herald.errors.NotAuthorError` (``not_author``). Returns the message as the
        server now has it (sealed, with ``edited_at`` and the edit's ``epoch``)."""

        async def edit(epoch: int, content: str) -> Message:
            return await self.channel.edit(message_id, content, epoch=epoch)

        return await self._sealed(plaintext, edit)

    async def _sealed(
        self, plaintext: bytes | str, request: Callable[[int, str], Awaitable[Message]]
    ) -> Message:
        """Seals ``plaintext`` under the head epoch and makes ``request(epoch, sealed)``,
        syncing and sealing again after a ``stale_epoch`` (up to 5 tries in all)."""
        data = plaintext.encode() if isinstance(plaintext, str) else bytes(plaintext)
        synced = False
        for _ in range(_RETRIES):
            c = self.e2ee._live.channels.get(self.id)
            sealed: tuple[int, str] | None = None
            if c is not None and c.keyring.contains(c.chain.epoch):
                try:
                    sealed = (
                        c.chain.epoch,
                        c.keyring.seal(self.e2ee._live.device, c.chain.epoch, data),
                    )
                except hc.CryptoError as e:
                    raise _crypto(e) from e
            if sealed is None:
                if synced:
                    raise EncryptedChannelError(
                        f"no key for the head epoch of channel {self.id} "
                        "(not sealed to this device yet)"
                    )
                await self.sync()
                synced = True
                continue
            epoch, content = sealed
            try:
                return await request(epoch, content)
            except StaleEpochError:
                await self.sync()
                synced = True
        raise EncryptedChannelError(
            f"channel {self.id}: the epoch kept changing; gave up after 5 tries"
        )

    async def open(self, m: Message) -> Opened:
        """Opens one message (its newest content: an edited one's is the edit's, and the
        result then carries ``edited_at``): parses the sealed form, finds the epoch key
        (syncing once if missing), checks the sealing device was a member at that epoch and
        is the author's, verifies its signature against its pin and decrypts. Never raises
        for a message that does not open: returns :class:`Unopenable`."""
        try:
            epoch, sender, plaintext = await self._unseal(m.content, m.author)
        except _Refused as e:
            return Unopenable(m.id, m.seq, m.author, e.reason, e.detail, m.edited_at)
        return OpenedMessage(
            m.id, m.seq, m.author, sender, epoch, m.type, plaintext, m.ts, m.edited_at
        )

    async def open_edit(self, edit: MessageEdited) -> OpenedEdit | Unopenable:
        """Opens a live edit (a ``message_edited`` event of this channel) with the same
        checks as :meth:`open`, the editor (the entry's author) standing for the author.
        Never raises for an edit that does not open: returns :class:`Unopenable` (with
        ``edited_at``, and the edit's ``seq``)."""
        author = edit.meta.author
        try:
            epoch, sender, plaintext = await self._unseal(edit.content, author)
        except _Refused as e:
            return Unopenable(edit.message_id, edit.seq, author, e.reason, e.detail, edit.edited_at)
        return OpenedEdit(
            edit.message_id, edit.seq, author, sender, epoch, plaintext, edit.edited_at
        )

    async def _unseal(self, content: str, author: str) -> tuple[int, str, bytes]:
        """``(epoch, sealing device, plaintext)`` of sealed ``content`` claimed by
        ``author``, after every check of :meth:`open`; raises :class:`_Refused` otherwise."""
        try:
            epoch, sender = hc.sealed_header(content)
        except hc.CryptoError as e:
            raise _Refused(MALFORMED, f"not a sealed message: {e}") from e
        live = self.e2ee._live
        c = live.channels.get(self.id)
        if c is None or not c.keyring.contains(epoch) or epoch not in c.commits:
            try:
                await self.sync()
            except HeraldError as e:
                log.debug("sync before opening failed: %s", e)
        no_key = f"no key for epoch {epoch} (not sealed to this device)"
        c = live.channels.get(self.id)
        if c is None:
            raise _Refused(NO_KEY, no_key)
        members = c.members_at(epoch)
        if members is None:
            raise _Refused(NO_KEY, no_key)
        member = next((mm for mm in members if sender in mm["devices"]), None)
        if member is None:
            raise _Refused(NOT_MEMBER, f"sender device {sender!r} is not a member at epoch {epoch}")
        if not c.keyring.contains(epoch):
            raise _Refused(NO_KEY, no_key)
        owner = str(member["user"])
        if _owner_user(owner) != author:
            raise _Refused(
                AUTHOR_MISMATCH,
                f"sealed by device {sender!r} of {owner!r}, "
                f"but the server names {author!r} as its author",
            )
        try:
            identity = await self.e2ee._peer(_owner_user(owner), sender)
        except HeraldError as e:
            raise _Refused(IDENTITY, f"sender identity: {e}") from e
        try:
            plaintext = c.keyring.open(content, _j(identity))
        except hc.CryptoError as e:
            raise _Refused(BAD_SIGNATURE, f"bad signature or ciphertext: {e}") from e
        return epoch, sender, plaintext

    async def verified_messages(self, *, after: int = 0, from_: str | None = None) -> list[Message]:
        """The channel's messages after seq ``after`` (and from time ``from_``, RFC 3339),
        oldest first, still sealed (an edited one with its newest content), after the whole
        log's hash chain was verified (a broken link raises :class:`~herald.ChainError`).
        Each message is checked against its verified log entry: the same author, and the
        same content, or for an edited message the content of its newest ``message_edited``
        entry, whose author must be the message's; anything else raises
        :class:`~herald.errors.IntegrityError`. (A message that does not match the log read so
        far, as one sent or edited since, makes the log be read on before it is judged.)"""
        log_ = _VerifiedLog()
        await log_.read(self.channel)
        out: list[Message] = []
        cursor = after
        while True:
            page = await self.channel.history(limit=500, after=cursor, from_=from_)
            for m in page.messages:
                cursor = max(cursor, m.seq)
                problem = log_.check(m)
                if problem is not None:
                    # Sent or edited since the log was read: read on, then judge.
                    await log_.read(self.channel)
                    problem = log_.check(m)
                if problem is not None:
                    raise IntegrityError(f"message at seq {m.seq} {problem}")
                out.append(m)
            if not page.has_more or not page.messages:
                return out

    async def history(self, *, after: int = 0) -> list[Opened]:
        """Every message (after seq ``after``), oldest first, each opened or with why not;
        the hash chain of the log is verified first (see :meth:`verified_messages`)."""
        return [await self.open(m) for m in await self.verified_messages(after=after)]

    def messages(self) -> EncryptedMessages:
        """New messages of this channel from now on, opened (or why not), as they arrive
        (edits are in :meth:`events`)."""
        return EncryptedMessages(self, self.e2ee.client.events())

    def edits(self) -> EncryptedEdits:
        """Edits of this channel's messages from now on (``message_edited``), each opened
        (:meth:`open_edit`): :class:`OpenedEdit`, or :class:`Unopenable` with why (the Rust
        SDK's ``edits()``; :meth:`events` has messages and edits in their order)."""
        return EncryptedEdits(self, self.e2ee.client.events())

    def events(self) -> EncryptedEvents:
        """New messages and edits of this channel from now on, as they arrive, each opened:
        :class:`OpenedMessage`, :class:`OpenedEdit` (a ``message_edited`` event), or
        :class:`Unopenable` with why (``edited_at`` set for an edit)."""
        return EncryptedEvents(self, self.e2ee.client.events())

    async def add_member(self, user: str) -> None:
        """``channel.add_member``, then admits them as a keeper does: a commit listing their
        current devices and every epoch key this device holds sealed to them (for an admin:
        the creator)."""
        await self.channel.add_member(user)
        await self.admit_member(user)

    async def admit_member(self, user: str) -> None:
        """Admits ``user`` (already a member on the server) into the roster and keys."""
        await self.e2ee._admit(self.id, self._created_by, user, True)

    async def remove_member(self, user: str) -> None:
        """``channel.remove_member`` and a rotation: a commit without them and a fresh key
        sealed to the remaining devices and keepers (a keeper's commit first stands)."""
        await self.channel.remove_member(user)
        await self.e2ee._rotate_without(self.id, self._created_by, user)

    async def rotate(self) -> None:
        """A new epoch with the same members and a fresh key."""
        for _ in range(_RETRIES):
            await self.sync()
            if await self.e2ee._post_commit(self.id, self.members(), {"kind": "rotate"}):
                return
        raise EncryptedChannelError("rotation lost the race 5 times")

    async def put_file(
        self,
        data: bytes,
        name: str,
        mime: str = "application/octet-stream",
        *,
        data_shards: int = 4,
        parity_shards: int = 2,
    ) -> tuple[Message, dict[str, Any]]:
        """Encrypts ``data``, erasure-codes it, uploads each shard (``?shard=i``), checks the
        blob ids, and sends ``{"manifest": …}`` sealed as a ``herald.file`` message."""
        try:
            manifest_json, shards = hc.encrypt_file(
                name, mime, data, data_shards=data_shards, parity_shards=parity_shards
            )
        except hc.CryptoError as e:
            raise _crypto(e) from e
        manifest: dict[str, Any] = json.loads(manifest_json)
        for i, shard in enumerate(shards):
            ok = await self.e2ee._rest.json(
                "PUT",
                f"/v1/channels/{segment(self.id)}/blobs",
                content=shard,
                params={"shard": i},
            )
            blob_id = ok.get("blob_id") if isinstance(ok, dict) else None
            if manifest["shard_hashes"][i] != blob_id:
                raise ProtocolError(f"the server stored shard {i} under another id")
        body = json.dumps({"manifest": manifest}, separators=(",", ":")).encode()
        m = await self.send(body, type=FILE_TYPE)
        return m, manifest

    async def get_file(self, manifest: dict[str, Any]) -> bytes:
        """Downloads the shards and rebuilds the file from any ``k`` intact ones."""
        shards: list[bytes | None] = []
        intact = 0
        hashes = [str(h) for h in manifest.get("shard_hashes") or []]
        for h in hashes:
            try:
                b = await self.channel.get_blob(h)
            except (NotFoundError, IntegrityError):
                shards.append(None)
                continue
            if blake3.blake3(b).hexdigest() == h:
                intact += 1
                shards.append(b)
            else:
                shards.append(None)
        k = int(manifest.get("k", 0))
        if intact < k:
            raise EncryptedChannelError(
                f"file {manifest.get('name')!r} cannot be rebuilt: {intact} of {len(hashes)} "
                f"shards survive, {k} needed"
            )
        try:
            return hc.decrypt_file(json.dumps(manifest), shards)
        except hc.CryptoError as e:
            raise _crypto(e) from e


class _VerifiedLog:
    """What :meth:`EncryptedChannel.verified_messages` checks history against: the verified
    log's ``message`` entries (by seq) and each message's newest ``message_edited`` entry (by
    message id, the entry's ``ref``), as ``(content, author)``."""

    def __init__(self) -> None:
        self.messages: dict[int, tuple[str | None, str]] = {}
        self.edits: dict[str, tuple[str | None, str]] = {}
        self._after = 0
        self._anchor: tuple[int, bytes] | None = None

    async def read(self, channel: Channel) -> None:
        """Reads (and verifies) the log on from where the last read ended."""
        while True:
            page = await channel.log(self._after, 500, anchor=self._anchor)
            for e in page.entries:
                if e.kind == "message":
                    self.messages[e.seq] = (e.content, e.author)
                elif e.kind == "message_edited":
                    self.edits[e.ref] = (e.content, e.author)
            if page.entries:
                last = page.entries[-1]
                self._after, self._anchor = last.seq, (last.seq, bytes.fromhex(last.hash))
            if not page.entries or not page.has_more:
                return

    def check(self, m: Message) -> str | None:
        """Why ``m`` does not match the log read so far, or None."""
        entry = self.messages.get(m.seq)
        if entry is None:
            return "is not in the verified log"
        content, author = entry
        if author != m.author:
            return f"names {m.author!r} as its author, its verified log entry {author!r}"
        if m.edited_at is None:
            return None if content == m.content else "differs from its verified log entry"
        edit = self.edits.get(m.id)
        if edit is None:
            return "is edited, but the verified log has no edit of it"
        if edit[1] != author:
            return f"was edited by {edit[1]!r}, not by its author {author!r}"
        if edit[0] != m.content:
            return "differs from its newest verified edit"
        return None


class _OpenedStream(AsyncIterator[_T]):
    """Events of one encrypted channel, opened (the event stream is taken when it is made, so
    nothing sent after is missed); :meth:`_opened` picks and opens them."""

    def __init__(self, channel: EncryptedChannel, events: EventStream) -> None:
        self._channel = channel
        self._events = events

    def __aiter__(self) -> _OpenedStream[_T]:
        return self

    async def _opened(self, ev: object) -> _T | None:
        """``ev`` opened, or ``None`` when this stream does not carry it."""
        raise NotImplementedError

    async def __anext__(self) -> _T:
        async for ev in self._events:
            if getattr(ev, "channel", None) == self._channel.id:
                opened = await self._opened(ev)
                if opened is not None:
                    return opened
        raise StopAsyncIteration

    async def next(self, timeout: float | None = None) -> _T:
        """The next one, within ``timeout`` seconds (``TimeoutError`` otherwise)."""
        return await asyncio.wait_for(self.__anext__(), timeout)

    def close(self) -> None:
        self._events.close()


class EncryptedMessages(_OpenedStream[Opened]):
    """New messages of one encrypted channel, opened: from :meth:`EncryptedChannel.messages`
    (the event stream is taken when it is made, so nothing sent after is missed)."""

    async def _opened(self, ev: object) -> Opened | None:
        return await self._channel.open(ev.message) if isinstance(ev, MessageEvent) else None


class EncryptedEdits(_OpenedStream[OpenedEdit | Unopenable]):
    """Edits of one encrypted channel's messages, opened: from :meth:`EncryptedChannel.edits`
    (the event stream is taken when it is made)."""

    async def _opened(self, ev: object) -> OpenedEdit | Unopenable | None:
        return await self._channel.open_edit(ev) if isinstance(ev, MessageEdited) else None


class EncryptedEvents(_OpenedStream[OpenedEvent]):
    """New messages and edits of one encrypted channel, opened: from
    :meth:`EncryptedChannel.events` (the event stream is taken when it is made)."""

    async def _opened(self, ev: object) -> OpenedEvent | None:
        if isinstance(ev, MessageEvent):
            return await self._channel.open(ev.message)
        if isinstance(ev, MessageEdited):
            return await self._channel.open_edit(ev)
        return None


class Space:
    """Encrypted channels named by topic, the seed's shape::

        space = e2ee.space()
        sent = await space.post_encrypted_message("general", "chat.text", {"text": "hi"})
        await space.edit_encrypted_message("general", sent.id, {"text": "hi all"})
        for msg in await space.get_messages("general"):  # edited ones: newest data
            print(await space.decrypt_message_data(msg, "general"))

    ``data`` travels as its JSON (sealed); ``decrypt_message_data`` gives back the JSON
    value, or the text when the plaintext is not JSON (a message another client sealed as
    plain text), or the bytes when it is not UTF-8. :meth:`get_messages` verifies the
    channel's hash chain first and raises :class:`~herald.ChainError` on a broken link."""

    def __init__(self, e2ee: E2ee) -> None:
        self.e2ee = e2ee
        self._channels: dict[str, EncryptedChannel] = {}

    async def channel(self, topic: str, *, create: bool = False) -> EncryptedChannel:
        """The encrypted channel named ``topic`` (created with only this user as member
        when ``create`` and it does not exist)."""
        ch = self._channels.get(topic)
        if ch is not None:
            return ch
        try:
            ch = await self.e2ee.encrypted_channel(topic)
        except (ChannelNotFoundError, NotFoundError):
            if not create:
                raise
            ch = await self.e2ee.create_encrypted(topic)
        self._channels[topic] = ch
        return ch

    async def post_encrypted_message(self, topic: str, type: str, data: Any) -> Message:
        """Seals ``data`` (as JSON; bytes as they are) for ``topic`` with message type
        ``type`` and sends it; creates the topic's channel on first use."""
        ch = await self.channel(topic, create=True)
        return await ch.send(_data_bytes(data), type=type)

    async def edit_encrypted_message(self, topic: str, message_id: str, data: Any) -> Message:
        """Replaces the data of one's own message ``message_id`` of ``topic`` with ``data``,
        sealed as :meth:`post_encrypted_message` seals it (the message keeps its type)."""
        ch = await self.channel(topic)
        return await ch.edit(message_id, _data_bytes(data))

    async def get_messages(self, topic: str, *, from_: int | str | None = None) -> list[Message]:
        """The topic's messages, oldest first, still sealed: after seq ``from_`` (an int) or
        from the time ``from_`` (RFC 3339), all without it. Chain-verified."""
        ch = await self.channel(topic)
        if isinstance(from_, str):
            return await ch.verified_messages(from_=from_)
        return await ch.verified_messages(after=from_ or 0)

    async def decrypt_message_data(self, msg: Message | MessageEdited, topic: str) -> Any:
        """The data of ``msg`` (see the class docs), a message (an edited one gives its
        newest data) or a live edit (a ``message_edited`` event); raises
        :class:`UnopenableError` with the reason when it cannot be opened."""
        ch = await self.channel(topic)
        opened = await (ch.open_edit(msg) if isinstance(msg, MessageEdited) else ch.open(msg))
        if isinstance(opened, Unopenable):
            raise UnopenableError(opened)
        try:
            text = opened.plaintext.decode()
        except UnicodeDecodeError:
            return opened.plaintext
        try:
            return json.loads(text)
        except ValueError:
            return text


def _data_bytes(data: Any) -> bytes:
    """What the :class:`Space` seals for ``data``: its JSON, bytes as they are."""
    return bytes(data) if isinstance(data, (bytes, bytearray)) else _j(data).encode()


__all__ = [
    "AUTHOR_MISMATCH",
    "BAD_SIGNATURE",
    "FILE_TYPE",
    "IDENTITY",
    "MALFORMED",
    "NOT_MEMBER",
    "NO_KEY",
    "CryptoFailure",
    "Dm",
    "DmFailure",
    "DmStream",
    "E2ee",
    "E2eeError",
    "EncryptedChannel",
    "EncryptedChannelError",
    "EncryptedEdits",
    "EncryptedEvents",
    "EncryptedMessages",
    "FingerprintMismatchError",
    "IdentityChangedError",
    "Opened",
    "OpenedEdit",
    "OpenedEvent",
    "OpenedMessage",
    "ServerError",
    "Space",
    "StateError",
    "StateKey",
    "UnknownDeviceError",
    "Unopenable",
    "UnopenableError",
    "fingerprint",
]

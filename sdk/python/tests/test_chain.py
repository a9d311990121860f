"""The hash chain (PROTOCOL.md §5): the shared vectors, and refusal of tampered entries."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest

import herald
from conftest import FIXTURES
from herald.chain import (
    ChainVerifier,
    EntryRef,
    content_hash,
    entry_hash,
    parse_ts_ms,
    verify_entry,
    verify_log_page,
)

VECTORS: dict[str, Any] = json.loads((FIXTURES / "chain-v1.json").read_text())
CHANNEL: str = VECTORS["channel"]


def ts_of(ms: int) -> str:
    """RFC 3339 UTC with milliseconds, as the server writes it."""
    import datetime

    dt = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def log_entries() -> list[dict[str, Any]]:
    """The vectors as `GET /v1/channels/{id}/log` would return them."""
    out = []
    for v in VECTORS["entries"]:
        e = {k: v[k] for k in ("seq", "kind", "author", "ref", "content_hash", "prev_hash")}
        e.update(hash=v["hash"], ts=ts_of(v["ts_ms"]), content=v["content"], salt=v["salt"])
        out.append(e)
    return out


@pytest.mark.parametrize("v", VECTORS["entries"], ids=lambda v: f"seq{v['seq']}-{v['kind']}")
def test_vectors_are_reproduced(v: dict[str, Any]) -> None:
    ch = content_hash(bytes.fromhex(v["salt"]), v["content"])
    assert ch.hex() == v["content_hash"]
    h = entry_hash(
        bytes.fromhex(v["prev_hash"]),
        seq=v["seq"],
        kind=v["kind"],
        channel_id=CHANNEL,
        author=v["author"],
        ref=v["ref"],
        ts_ms=v["ts_ms"],
        content_hash=ch,
    )
    assert h.hex() == v["hash"]


def test_timestamps_parse_to_milliseconds() -> None:
    assert parse_ts_ms("2024-11-19T07:06:42.123Z") == 1_732_000_002_123
    assert parse_ts_ms("2024-11-19T08:06:42.123+01:00") == 1_732_000_002_123
    assert parse_ts_ms("2024-11-19T07:06:42Z") == 1_732_000_002_000
    assert parse_ts_ms("yesterday") is None
    assert parse_ts_ms("2024-11-19T07:06:42.123") is None, "no offset: not RFC 3339"
    for v in VECTORS["entries"]:
        assert parse_ts_ms(ts_of(v["ts_ms"])) == v["ts_ms"]


def test_the_vector_log_verifies_as_a_page() -> None:
    verify_log_page(CHANNEL, 0, log_entries())
    # And from the middle, anchored on a verified head.
    entries = log_entries()
    head = (3, bytes.fromhex(entries[2]["hash"]))
    verify_log_page(CHANNEL, 3, entries[3:], head)


def tampered(field: str, value: Any, index: int = 3) -> list[dict[str, Any]]:
    entries = log_entries()
    entries[index][field] = value
    return entries


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("content", "Hello 👋 everyone!", "content_mismatch"),
        ("author", "mallory", "hash_mismatch"),
        ("ref", "0190f5c2-7a1b-7cc3-9a4e-2b7d8c1e0f00", "hash_mismatch"),
        ("ts", "2024-11-19T07:06:44.000Z", "hash_mismatch"),
        ("kind", "message_edited", "hash_mismatch"),
        ("hash", "zz" * 32, "malformed"),
        ("prev_hash", "00" * 32, "hash_mismatch"),
    ],
)
def test_a_tampered_entry_is_a_chain_error(field: str, value: Any, reason: str) -> None:
    with pytest.raises(herald.ChainError) as err:
        verify_log_page(CHANNEL, 0, tampered(field, value, index=2))
    assert err.value.reason == reason
    assert err.value.seq == 3
    assert err.value.channel == CHANNEL


def test_a_consistent_forgery_breaks_the_link() -> None:
    # Entry 3 rewritten with a new content AND a recomputed hash: it verifies on its own,
    # but entry 4 no longer links to it.
    entries = log_entries()
    forged = dict(entries[2], content="forged")
    salt = bytes.fromhex(forged["salt"])
    ch = content_hash(salt, "forged")
    forged["content_hash"] = ch.hex()
    forged["hash"] = entry_hash(
        bytes.fromhex(forged["prev_hash"]),
        seq=3,
        kind="message",
        channel_id=CHANNEL,
        author=forged["author"],
        ref=forged["ref"],
        ts_ms=parse_ts_ms(forged["ts"]) or 0,
        content_hash=ch,
    ).hex()
    entries[2] = forged
    with pytest.raises(herald.ChainError) as err:
        verify_log_page(CHANNEL, 0, entries)
    assert (err.value.reason, err.value.seq) == ("broken_link", 4)


def test_a_page_that_does_not_meet_the_verified_head_is_refused() -> None:
    entries = log_entries()
    wrong_head = (3, bytes(32))
    with pytest.raises(herald.ChainError) as err:
        verify_log_page(CHANNEL, 3, entries[3:], wrong_head)
    assert err.value.reason == "broken_link"
    with pytest.raises(herald.ChainError) as err:
        verify_log_page(CHANNEL, 0, entries, wrong_head)
    assert err.value.reason == "hash_mismatch"


def test_gaps_and_genesis() -> None:
    entries = log_entries()
    with pytest.raises(herald.ChainError) as err:
        verify_log_page(CHANNEL, 0, entries[:2] + entries[3:])
    assert err.value.reason == "gap"
    # Entry 1 whose prev_hash is not zero, with a hash recomputed to match it.
    e = verify_fields(entries[0])
    bad = EntryRef(**{**e.__dict__, "prev_hash": "11" * 32})
    bad = EntryRef(
        **{
            **bad.__dict__,
            "hash": entry_hash(
                bytes.fromhex("11" * 32),
                seq=1,
                kind=bad.kind,
                channel_id=CHANNEL,
                author=bad.author,
                ref=bad.ref,
                ts_ms=bad.ts_ms,
                content_hash=bytes.fromhex(entries[0]["content_hash"]),
            ).hex(),
        }
    )
    with pytest.raises(herald.ChainError) as err:
        verify_entry(bad)
    assert err.value.reason == "bad_genesis"


def verify_fields(raw: dict[str, Any]) -> EntryRef:
    return EntryRef(
        channel_id=CHANNEL,
        seq=raw["seq"],
        kind=raw["kind"],
        author=raw["author"],
        ref=raw["ref"],
        ts_ms=parse_ts_ms(raw["ts"]) or 0,
        content=raw["content"],
        salt=raw["salt"],
        content_hash=raw["content_hash"],
        prev_hash=raw["prev_hash"],
        hash=raw["hash"],
    )


def test_a_tombstone_still_verifies_through_its_content_hash() -> None:
    entries = log_entries()
    del entries[2]["content"]
    del entries[2]["salt"]
    verify_log_page(CHANNEL, 0, entries)


def test_verifier_drops_duplicates_and_refuses_a_changed_head() -> None:
    v = ChainVerifier()
    refs = [verify_fields(e) for e in log_entries()]
    assert all(v.check(r) for r in refs[:4])
    assert v.check(refs[2]) is False, "an older entry is a duplicate"
    assert v.check(refs[3]) is False, "the head again is a duplicate"
    assert v.head(CHANNEL) == (4, bytes.fromhex(log_entries()[3]["hash"]))
    with pytest.raises(herald.ChainError) as err:
        v.check(refs[5])
    assert err.value.reason == "gap"


def test_lp_is_u32_big_endian_length_of_utf8() -> None:
    # The kind/author/ref are length-prefixed by their UTF-8 byte length, not characters.
    from herald.chain import _lp

    assert _lp("👍") == struct.pack(">I", 4) + "👍".encode()


def test_verify_entry_computes_what_a_compact_entry_leaves_out() -> None:
    # No hash and no content_hash (a salt is there): both come out as the vectors'.
    v = ChainVerifier()
    for raw in log_entries():
        e = EntryRef(**{**verify_fields(raw).__dict__, "hash": None, "content_hash": None})
        checked = verify_entry(e)
        assert (checked.hash.hex(), checked.content_hash.hex()) == (
            raw["hash"],
            raw["content_hash"],
        )
        assert v.link(checked)
    assert v.head(CHANNEL) == (7, bytes.fromhex(log_entries()[-1]["hash"]))
    # A tombstone: no salt, so the content_hash it carries is what is hashed.
    raw = log_entries()[2]
    tomb = EntryRef(**{**verify_fields(raw).__dict__, "hash": None, "content": None, "salt": None})
    assert verify_entry(tomb).hash.hex() == raw["hash"]
    with pytest.raises(herald.ChainError) as err:
        verify_entry(EntryRef(**{**tomb.__dict__, "content_hash": None}))
    assert err.value.reason == "malformed"

"""The pure session (no server): chain verification of live events, dedupe on resume,
resume points and what is resent after a reconnect. Events are the shared vectors turned
into the pushes a server would send."""

from __future__ import annotations

import json
from typing import Any

import pytest

import herald
from herald.session import Emit, Rejected, Reply, Send, Session
from test_chain import CHANNEL, VECTORS, ts_of


def as_event(v: dict[str, Any]) -> dict[str, Any]:
    """A vector entry as the WebSocket push of its kind."""
    e: dict[str, Any] = {
        "event": v["kind"],
        "channel": CHANNEL,
        "seq": v["seq"],
        "hash": v["hash"],
        "prev_hash": v["prev_hash"],
        "ts": ts_of(v["ts_ms"]),
        "author": v["author"],
        "salt": v["salt"],
        "content_hash": v["content_hash"],
    }
    kind = v["kind"]
    if kind == "channel_created":
        e["name"] = v["content"]
    elif kind == "member_joined":
        e.update(user=v["ref"], by=v["author"])
    elif kind == "message":
        message: dict[str, Any] = {
            "id": f"m{v['seq']}",
            "seq": v["seq"],
            "author": v["author"],
            "type": "chat.text",
            "content": v["content"],
            "ts": e["ts"],
        }
        if v["ref"]:
            message["reply_to"] = {"id": v["ref"], "author": "ada", "content": "x"}
        e["message"] = message
    elif kind == "reaction":
        e.update(reaction_id="r1", message_id=v["ref"], emoji=v["content"])
    elif kind == "message_edited":
        e.update(message_id=v["ref"], content=v["content"], edited_at=e["ts"])
    elif kind == "message_deleted":
        e.update(message_id=v["ref"])
    return e


EVENTS = [as_event(v) for v in VECTORS["entries"]]


def delivered(outs: list[Any]) -> list[herald.Event]:
    return [o.event for o in outs if isinstance(o, Emit)]


def sent(outs: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(o.text) for o in outs if isinstance(o, Send)]


def ready(session: Session[str], token: str = "t") -> list[Any]:
    """Connects the session: returns the outputs of the connect reply."""
    frame = json.loads(session.connect(token))
    ok = {"conn_id": "c1", "user": {"id": "ada", "kind": "human"}}
    return session.handle_text(json.dumps({"id": frame["id"], "ok": ok}))


def feed(session: Session[str], event: dict[str, Any]) -> list[herald.Event]:
    return delivered(session.handle_text(json.dumps(event)))


def test_every_vector_event_is_verified_and_typed() -> None:
    s: Session[str] = Session(seed_on_connect=False)
    ready(s)
    got = [ev for e in EVENTS for ev in feed(s, e)]
    kinds = [type(ev).__name__ for ev in got]
    assert kinds == [
        "ChannelCreated",
        "MemberJoined",
        "MessageEvent",
        "MessageEvent",
        "ReactionAdded",
        "MessageEdited",
        "MessageDeleted",
    ]
    assert s.resume_points() == {CHANNEL: 7}


def test_a_tampered_live_event_is_a_chain_error_and_not_delivered() -> None:
    s: Session[str] = Session(seed_on_connect=False)
    ready(s)
    for e in EVENTS[:2]:
        feed(s, e)
    bad = json.loads(json.dumps(EVENTS[2]))
    bad["message"]["content"] = "Hello everyone, send money"
    got = feed(s, bad)
    assert len(got) == 1
    assert isinstance(got[0], herald.ChainFailed)
    assert (got[0].error.reason, got[0].error.seq) == ("content_mismatch", 3)
    # The head did not move: the genuine entry is still accepted next.
    assert s.resume_points() == {CHANNEL: 2}
    assert isinstance(feed(s, EVENTS[2])[0], herald.MessageEvent)


def test_a_skipped_entry_is_a_gap() -> None:
    s: Session[str] = Session(seed_on_connect=False)
    ready(s)
    feed(s, EVENTS[0])
    got = feed(s, EVENTS[2])
    assert isinstance(got[0], herald.ChainFailed)
    assert got[0].error.reason == "gap"


def test_a_replay_after_reconnect_delivers_nothing_twice() -> None:
    s: Session[str] = Session(seed_on_connect=False)
    ready(s)
    for e in EVENTS[:4]:
        feed(s, e)
    outs = s.disconnected("gone")
    assert any(isinstance(o, Emit) and isinstance(o.event, herald.Disconnected) for o in outs)
    frame = json.loads(s.connect("t"))
    assert frame["resume"] == {CHANNEL: 4}
    ok = {"conn_id": "c2", "user": {"id": "ada"}}
    s.handle_text(json.dumps({"id": frame["id"], "ok": ok}))
    # A server replaying from further back than asked: the overlap is dropped silently.
    got = [ev for e in EVENTS[2:] for ev in feed(s, e)]
    assert [ev.seq for ev in got if isinstance(ev, herald.LogEvent)] == [5, 6, 7]


def test_quiet_channels_are_seeded_from_channel_list() -> None:
    s: Session[str] = Session()
    outs = ready(s)
    list_req = sent(outs)[0]
    assert list_req["op"] == "channel.list", "the seeding list goes out first"
    assert s.is_seeding
    ok = {"channels": [{"id": "quiet", "name": "q", "title": None, "unread": 0, "last_seq": 9}]}
    s.handle_text(json.dumps({"id": list_req["id"], "ok": ok}))
    assert not s.is_seeding
    assert s.resume_points() == {"quiet": 9}
    # A verified head wins over a seed.
    feed(s, EVENTS[0])
    s.seed(CHANNEL, 0)
    assert s.resume_points() == {"quiet": 9, CHANNEL: 1}


def test_keyed_sends_are_resent_after_a_reconnect_and_others_fail() -> None:
    s: Session[str] = Session(seed_on_connect=False)
    ready(s)
    s.request({"op": "message.send", "channel": CHANNEL, "content": "a", "client_id": "k1"}, "w1")
    s.request({"op": "ping"}, "w2")
    outs = s.disconnected("restart")
    failed = [o for o in outs if isinstance(o, Reply)]
    assert [o.waiter for o in failed] == ["w2"]
    assert isinstance(failed[0].error, herald.ConnectionLostError)
    resent = sent(ready(s))
    assert [(f["op"], f.get("client_id")) for f in resent] == [("message.send", "k1")]


def test_requests_made_offline_wait_and_abandoned_ones_are_never_sent() -> None:
    abandoned = {"w1"}
    s: Session[str] = Session(seed_on_connect=False, is_abandoned=lambda w: w in abandoned)
    assert s.request({"op": "ping"}, "w1") == []
    assert s.request({"op": "channel.list"}, "w2") == []
    assert [f["op"] for f in sent(ready(s))] == ["channel.list"]


def test_subjects_are_resubscribed_and_unsubscribed_with_the_last() -> None:
    s: Session[str] = Session(seed_on_connect=False)
    ready(s)
    s.subscribe("lobby", "w1")
    s.subscribe("lobby", "w2")
    assert sent(s.unsubscribe("lobby")) == [], "one local subscription is left"
    s.disconnected("x")
    assert [(f["op"], f["subject"]) for f in sent(ready(s))] == [("subscribe", "lobby")]
    assert [f["op"] for f in sent(s.unsubscribe("lobby"))] == ["unsubscribe"]


def test_error_replies_become_exceptions_named_after_their_code() -> None:
    s: Session[str] = Session(seed_on_connect=False)
    ready(s)
    frame = sent(s.request({"op": "channel.join", "channel": "nope"}, "w"))[0]
    err = {"code": "channel_not_found", "message": "no channel nope"}
    outs = s.handle_text(json.dumps({"id": frame["id"], "error": err}))
    reply = outs[0]
    assert isinstance(reply, Reply)
    assert isinstance(reply.error, herald.ChannelNotFoundError)
    assert reply.error.code == "channel_not_found"
    frame = sent(s.request({"op": "ping"}, "w"))[0]
    limited: dict[str, object] = {"code": "rate_limited", "message": "slow", "retry_after_ms": 120}
    reply = s.handle_text(json.dumps({"id": frame["id"], "error": limited}))[0]
    assert isinstance(reply, Reply)
    assert isinstance(reply.error, herald.RateLimitedError)
    assert reply.error.retry_after_ms == 120
    frame = sent(s.request({"op": "ping"}, "w"))[0]
    reply = s.handle_text(json.dumps({"id": frame["id"], "error": {"code": "brand_new"}}))[0]
    assert isinstance(reply, Reply)
    assert type(reply.error) is herald.ServerError
    assert reply.error.code == "brand_new"


def test_a_refused_connect_is_rejected() -> None:
    s: Session[str] = Session()
    frame = json.loads(s.connect("bad"))
    err = {"code": "unauthorized", "message": "bad token"}
    outs = s.handle_text(json.dumps({"id": frame["id"], "error": err}))
    assert isinstance(outs[0], Rejected)
    assert isinstance(outs[0].error, herald.UnauthorizedError)


def test_unreadable_frames_are_ignored() -> None:
    s: Session[str] = Session()
    ready(s)
    assert s.handle_text("not json") == []
    assert s.handle_text("[1, 2]") == []
    assert feed(s, {"event": "message", "channel": CHANNEL}) == [], "no seq: no log entry"
    unknown = feed(s, {"event": "participant_added", "channel": CHANNEL, "participant": {}})
    assert isinstance(unknown[0], herald.UnknownEvent)
    assert unknown[0].name == "participant_added"


# -- compact log events (docs/protocol.md §B) -------------------------------------------


def compact(event: dict[str, Any]) -> dict[str, Any]:
    """A full log event in the compact form a server may send instead: no ``hash``, no
    ``content_hash`` beside a ``salt``, and a ``message`` without ``seq``, ``author``, ``ts``."""
    e: dict[str, Any] = json.loads(json.dumps(event))
    del e["hash"]
    if "salt" in e:
        del e["content_hash"]
    if "message" in e:
        for key in ("seq", "author", "ts"):
            del e["message"][key]
    return e


def more_events() -> list[dict[str, Any]]:
    """Entries 8 to 10 after the vectors, of the kinds they lack (reaction_deleted,
    member_left, key_rotated), hashed like the vectors (test_chain reproduces those)."""
    from herald.chain import content_hash, entry_hash

    prev = VECTORS["entries"][-1]["hash"]
    out = []
    specs: list[tuple[str, str, str, dict[str, Any]]] = [
        ("reaction_deleted", "r1", "", {"reaction_id": "r1", "message_id": "m4"}),
        ("member_left", "grace", "", {"user": "grace", "by": "ada"}),
        ("key_rotated", "2", "cd" * 32, {"epoch": 2, "commit_hash": "cd" * 32}),
    ]
    for seq, (kind, ref, content, fields) in enumerate(specs, start=8):
        ts_ms = 1_732_000_000_000 + seq * 1000
        salt = bytes([seq]) * 16
        ch = content_hash(salt, content)
        h = entry_hash(
            bytes.fromhex(prev),
            seq=seq,
            kind=kind,
            channel_id=CHANNEL,
            author="ada",
            ref=ref,
            ts_ms=ts_ms,
            content_hash=ch,
        ).hex()
        out.append(
            {
                "event": kind,
                "channel": CHANNEL,
                "seq": seq,
                "hash": h,
                "prev_hash": prev,
                "ts": ts_of(ts_ms),
                "author": "ada",
                "salt": salt.hex(),
                "content_hash": ch.hex(),
                **fields,
            }
        )
        prev = h
    return out


FULL = EVENTS + more_events()
COMPACT = [compact(e) for e in FULL]


def connected() -> Session[str]:
    s: Session[str] = Session(seed_on_connect=False)
    ready(s)
    return s


def test_compact_events_verify_and_come_out_as_the_full_ones() -> None:
    assert all("hash" not in e and "content_hash" not in e for e in COMPACT)
    assert all("seq" not in e["message"] for e in COMPACT if "message" in e)
    full_s, compact_s = connected(), connected()
    full = [ev for e in FULL for ev in feed(full_s, e)]
    got = [ev for e in COMPACT for ev in feed(compact_s, e)]
    assert [type(ev).__name__ for ev in got][-3:] == ["ReactionDeleted", "MemberLeft", "KeyRotated"]
    assert all(isinstance(ev, herald.LogEvent) for ev in got)
    assert got == full, "the typed events are the full form's"
    assert [ev.raw for ev in got if isinstance(ev, herald.LogEvent)] == FULL, "raw too"
    assert compact_s.verifier.head(CHANNEL) == full_s.verifier.head(CHANNEL)
    message = got[2]
    assert isinstance(message, herald.MessageEvent)
    v = VECTORS["entries"][2]
    assert (message.meta.hash, message.meta.content_hash) == (v["hash"], v["content_hash"])
    assert (message.message.seq, message.message.author, message.message.ts) == (
        3,
        "ada",
        ts_of(v["ts_ms"]),
    )
    # Dedupe works on the computed hashes: the head again is dropped, a changed head refused.
    assert feed(compact_s, COMPACT[-1]) == []
    changed = dict(COMPACT[-1], commit_hash="ef" * 32)
    failed = feed(compact_s, changed)
    assert isinstance(failed[0], herald.ChainFailed)
    assert (failed[0].error.reason, failed[0].error.seq) == ("hash_mismatch", 10)


def test_full_and_compact_events_mix_in_one_chain() -> None:
    s = connected()
    mixed = [FULL[i] if i % 2 else COMPACT[i] for i in range(len(FULL))]
    got = [ev for e in mixed for ev in feed(s, e)]
    assert [ev.seq for ev in got if isinstance(ev, herald.LogEvent)] == list(range(1, 11))


def test_a_compact_event_that_does_not_link_is_a_chain_error() -> None:
    s = connected()
    for e in COMPACT[:2]:
        feed(s, e)
    bad = dict(COMPACT[2], prev_hash="11" * 32)
    got = feed(s, bad)
    assert isinstance(got[0], herald.ChainFailed)
    assert (got[0].error.reason, got[0].error.seq) == ("broken_link", 3)
    assert s.resume_points() == {CHANNEL: 2}, "the head did not move"
    assert isinstance(feed(s, COMPACT[2])[0], herald.MessageEvent)
    # Entry 1 must still have a zero prev_hash.
    got = feed(connected(), dict(COMPACT[0], prev_hash="11" * 32))
    assert isinstance(got[0], herald.ChainFailed)
    assert got[0].error.reason == "bad_genesis"


def test_a_tampered_compact_event_breaks_the_link_of_the_next_one() -> None:
    # A compact entry carries nothing its content could be checked against on its own: a
    # rewritten content hashes to another entry hash, which the next entry does not link to.
    s = connected()
    for e in COMPACT[:2]:
        feed(s, e)
    forged = json.loads(json.dumps(COMPACT[2]))
    forged["message"]["content"] = "Hello everyone, send money"
    got = feed(s, forged)
    assert isinstance(got[0], herald.MessageEvent)
    assert got[0].meta.hash != VECTORS["entries"][2]["hash"]
    got = feed(s, COMPACT[3])
    assert isinstance(got[0], herald.ChainFailed)
    assert (got[0].error.reason, got[0].error.seq) == ("broken_link", 4)
    assert s.resume_points() == {CHANNEL: 3}


def test_a_compact_tombstone_verifies_through_its_content_hash() -> None:
    s = connected()
    for e in COMPACT[:2]:
        feed(s, e)
    tombstone = json.loads(json.dumps(COMPACT[2]))
    del tombstone["salt"]
    tombstone["message"]["content"] = ""
    tombstone["content_hash"] = VECTORS["entries"][2]["content_hash"]
    got = feed(s, tombstone)
    assert isinstance(got[0], herald.MessageEvent)
    assert got[0].meta.hash == VECTORS["entries"][2]["hash"]
    assert got[0].meta.salt is None
    assert (got[0].message.content, got[0].message.seq) == ("", 3)
    assert isinstance(feed(s, COMPACT[3])[0], herald.MessageEvent), "the next entry links"


def test_a_compact_event_with_neither_salt_nor_content_hash_is_malformed() -> None:
    s = connected()
    for e in COMPACT[:2]:
        feed(s, e)
    bare = dict(COMPACT[2])
    del bare["salt"]
    got = feed(s, bare)
    assert isinstance(got[0], herald.ChainFailed)
    assert (got[0].error.reason, got[0].error.seq) == ("malformed", 3)


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("hash", "00" * 32, "hash_mismatch"),
        ("content_hash", "00" * 32, "content_mismatch"),
        ("hash", 7, "malformed"),
        ("content_hash", "zz", "malformed"),
    ],
)
def test_hash_fields_that_are_sent_are_still_checked(field: str, value: Any, reason: str) -> None:
    s = connected()
    for e in COMPACT[:2]:
        feed(s, e)
    got = feed(s, dict(COMPACT[2], **{field: value}))
    assert isinstance(got[0], herald.ChainFailed)
    assert (got[0].error.reason, got[0].error.seq) == (reason, 3)

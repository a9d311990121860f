"""Encrypted notes from a script, with the blocking E2EE facade and the ``Space`` API:
posts a note to an encrypted topic (created on first use) and prints every note of it,
decrypted, oldest first. The device lives in a state file sealed under a passphrase; the
same file works with the Rust CLI (``herald history <topic> --state FILE``).

    HERALD_URL=http://127.0.0.1:7700 HERALD_TOKEN=$(herald token --sub ada) \\
    HERALD_STATE=ada.state HERALD_STATE_PASSPHRASE_FILE=pass \\
        python examples/python/e2ee_notes.py journal "remember the milk"

Each line printed: ``<seq> <author>: <note>``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from herald.e2ee import StateKey
from herald.sync_e2ee import connect


def main(topic: str, note: str | None) -> None:
    url = os.environ.get("HERALD_URL", "http://127.0.0.1:7700")
    token = os.environ["HERALD_TOKEN"]
    passphrase = Path(os.environ["HERALD_STATE_PASSPHRASE_FILE"]).read_text().strip()
    key = StateKey(passphrase=passphrase)
    with connect(url, token, state=os.environ["HERALD_STATE"], key=key) as me:
        space = me.space()
        if note is not None:
            space.post_encrypted_message(topic, "note", {"text": note})
        for msg in space.get_messages(topic):
            data = space.decrypt_message_data(msg, topic)
            text = data.get("text") if isinstance(data, dict) else data
            print(f"{msg.seq} {msg.author}: {text}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)

"""A maildir the shop "sends" e-mail into: any mail client (mutt -f, Thunderbird) can open it.

Each message is written under a key the caller chooses (a bus message id, ``<job>-<n>``), to
``tmp/`` and then renamed into ``new/`` — the maildir protocol, so a reader never sees half a
message. Delivering the same key twice is a no-op: event handlers and resumed jobs may run again,
and the recipient must still get one e-mail.
"""

from __future__ import annotations

import os
import re
import socket
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from pathlib import Path

__all__ = ["Maildir"]

_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")


class Maildir:
    def __init__(self, path: Path) -> None:
        self.path = path
        for sub in ("tmp", "new", "cur"):
            (path / sub).mkdir(parents=True, exist_ok=True)
        self._host = socket.gethostname().replace("/", "_").replace(":", "_")

    def _name(self, key: str) -> str:
        if _KEY.fullmatch(key) is None:
            raise ValueError(f"maildir key {key!r} must match {_KEY.pattern}")
        return f"{key}.{self._host}"

    def deliver(self, key: str, message: EmailMessage) -> bool:
        """Write ``message`` under ``key``; False when it was delivered before."""
        name = self._name(key)
        final = self.path / "new" / name
        if final.exists() or (self.path / "cur" / name).exists():
            return False
        tmp = self.path / "tmp" / f"{name}.{os.getpid()}"
        with open(tmp, "wb") as out:
            out.write(bytes(message))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, final)
        return True

    def read(self, key: str) -> EmailMessage | None:
        name = self._name(key)
        for sub in ("new", "cur"):
            file = self.path / sub / name
            if file.exists():
                parsed = BytesParser(policy=default_policy).parsebytes(file.read_bytes())
                assert isinstance(parsed, EmailMessage)  # the default policy's message class
                return parsed
        return None

    def count(self) -> int:
        return sum(1 for sub in ("new", "cur") for _ in (self.path / sub).iterdir())

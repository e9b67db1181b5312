"""The values a deployment must not carry in its manifests: the edges' admin token, the signing
keys and the key that encrypts them, the database password.

They are generated once, into files readable by their owner only, and kept: rendering again never
replaces a secret (delete the file to rotate it). The Kubernetes manifests only name them (a
Kustomize ``secretGenerator`` reads the files, ``kubectl apply -k`` turns them into Secrets); the
compose project reads them from its ``.env``. No value is ever written into a manifest or a
ConfigMap.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterable
from pathlib import Path

from cryptography.fernet import Fernet

from edgeway.security.errors import KeyStoreError
from edgeway.security.keys import FileKeyStore, KeyRing

__all__ = [
    "ADMIN_TOKEN",
    "KEK",
    "POSTGRES_PASSWORD",
    "SIGNING_KEYS",
    "ensure_env_file",
    "ensure_secret_files",
]

ADMIN_TOKEN = "admin-token"
KEK = "kek"
SIGNING_KEYS = "signing-keys.json"
POSTGRES_PASSWORD = "postgres-password"

# compose: .env variable per secret (the signing keys are created by the service in its volume)
ENV_NAMES = {
    ADMIN_TOKEN: "EDGEWAY_ADMIN_TOKEN",
    KEK: "EDGEWAY_SECURITY_KEK",
    POSTGRES_PASSWORD: "POSTGRES_PASSWORD",
}


class SecretsError(Exception):
    """Existing secrets that cannot be completed (a key file without the key that decrypts it)."""


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _new(name: str) -> str:
    if name == KEK:
        return Fernet.generate_key().decode("ascii")
    # URL-safe: a password goes into a database URL unescaped
    return secrets.token_urlsafe(32)


def ensure_secret_files(directory: Path, names: Iterable[str]) -> dict[str, str]:
    """The secrets ``names`` in ``directory`` (one file each), creating the missing ones."""
    wanted = set(names)
    if SIGNING_KEYS in wanted:
        wanted.add(KEK)
    values: dict[str, str] = {}
    for name in sorted(wanted - {SIGNING_KEYS}):
        path = directory / name
        if path.exists():
            values[name] = path.read_text(encoding="utf-8").strip()
        else:
            values[name] = _new(name)
            _write_private(path, values[name] + "\n")
    if SIGNING_KEYS in wanted:
        path = directory / SIGNING_KEYS
        if not path.exists():
            store = FileKeyStore(path, values[KEK].encode("ascii"))
            store.save(KeyRing.generate("EdDSA"))
        else:
            try:
                FileKeyStore(path, values[KEK].encode("ascii")).load()
            except KeyStoreError as exc:
                raise SecretsError(
                    f"{path} cannot be read with {directory / KEK} ({exc}); delete both to start with new "
                    "signing keys (tokens signed with the old ones stop being accepted)"
                ) from exc
        values[SIGNING_KEYS] = path.read_text(encoding="utf-8")
    _ignore_all(directory)
    return values


def _ignore_all(directory: Path) -> None:
    ignore = directory / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# secrets: never commit them\n*\n!.gitignore\n", encoding="utf-8")


def ensure_env_file(path: Path, names: Iterable[str]) -> dict[str, str]:
    """The compose project's ``.env``: one ``NAME=value`` per secret, the missing ones added."""
    existing: dict[str, str] = {}
    lines: list[str] = []
    if path.exists():
        lines = path.read_text(encoding="utf-8").splitlines()
        for line in lines:
            key, sep, value = line.partition("=")
            if sep and not line.lstrip().startswith("#"):
                existing[key.strip()] = value.strip()
    else:
        lines = ["# Secrets of this compose project, created by `edgeway deploy render`; never commit it."]
    values: dict[str, str] = {}
    for name in sorted(set(names)):
        variable = ENV_NAMES[name]
        if variable not in existing:
            existing[variable] = _new(name)
            lines.append(f"{variable}={existing[variable]}")
        values[name] = existing[variable]
    _write_private(path, "\n".join(lines) + "\n")
    return values

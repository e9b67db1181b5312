"""Signing keys: thumbprints, rotation with overlap, and storage at rest."""

from __future__ import annotations

import json
import os

import pytest

from edgeway.security.errors import KeyDecryptionFailed, KeyFileInsecure, KeyStoreError
from edgeway.security.keys import (
    FileKeyStore,
    KeyRing,
    SigningKey,
    generate_kek,
    jwk_thumbprint,
    load_kek,
    public_key_from_jwk,
)


def test_rfc7638_thumbprint_matches_the_rfc_example() -> None:
    # RFC 7638 section 3.1 gives an RSA example; RFC 8037 appendix A.3 gives this Ed25519 one.
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
    assert jwk_thumbprint(jwk) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
def test_kid_is_the_thumbprint_of_the_public_jwk(alg: str) -> None:
    key = SigningKey.generate(alg)  # type: ignore[arg-type]
    jwk = key.public_jwk()
    assert jwk["kid"] == jwk_thumbprint(jwk)
    parsed_alg, public = public_key_from_jwk(jwk)
    assert parsed_alg == alg
    assert jwk_thumbprint(jwk) == SigningKey.from_private_key(key.private_key, key.alg).kid
    assert public is not None


def test_repr_never_shows_private_key_material() -> None:
    key = SigningKey.generate()
    pem = key.private_pem().decode()
    body = "".join(pem.splitlines()[1:-1])
    assert "redacted" in repr(key)
    assert body not in repr(key)
    assert body not in str(key)
    assert body not in repr(KeyRing([key]))


def test_rotation_keeps_the_old_key_published_until_its_overlap_ends() -> None:
    ring = KeyRing.generate(now=1000.0)
    old = ring.active
    new = ring.rotate(overlap=600.0, now=2000.0)
    assert ring.active is new
    assert {k["kid"] for k in ring.jwks()["keys"]} == {old.kid, new.kid}
    assert ring.prune(now=2599.0) == []
    gone = ring.prune(now=2600.0)
    assert [k.kid for k in gone] == [old.kid]
    assert [k["kid"] for k in ring.jwks()["keys"]] == [new.kid]


def test_a_ring_without_an_active_key_is_refused() -> None:
    key = SigningKey.generate()
    with pytest.raises(KeyStoreError, match="no active key"):
        KeyRing([SigningKey.from_private_key(key.private_key, "EdDSA", retire_at=5.0)])


def test_plain_key_file_is_written_0600_and_round_trips(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "keys.json")
    store = FileKeyStore(path)
    ring = KeyRing.generate()
    ring.rotate(overlap=60)
    store.save(ring)
    assert os.stat(path).st_mode & 0o777 == 0o600
    loaded = store.load()
    assert [k.kid for k in loaded.keys] == [k.kid for k in ring.keys]
    assert loaded.active.kid == ring.active.kid


def test_world_or_group_readable_plain_key_file_is_refused(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "keys.json")
    FileKeyStore(path).save(KeyRing.generate())
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileInsecure, match="chmod 600"):
        FileKeyStore(path).load()
    os.chmod(path, 0o640)
    with pytest.raises(KeyFileInsecure):
        FileKeyStore(path).load()


def test_encrypted_key_file_holds_no_plaintext_and_needs_the_kek(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "keys.json")
    kek = generate_kek().encode()
    ring = KeyRing.generate()
    FileKeyStore(path, kek).save(ring)
    with open(path) as f:
        text = f.read()
    assert "PRIVATE KEY" not in text
    assert json.loads(text)["encrypted"] is True
    assert FileKeyStore(path, kek).load().active.kid == ring.active.kid
    with pytest.raises(KeyDecryptionFailed, match="EDGEWAY_SECURITY_KEK"):
        FileKeyStore(path).load()
    with pytest.raises(KeyDecryptionFailed, match="not the one"):
        FileKeyStore(path, generate_kek().encode()).load()
    os.chmod(path, 0o604)
    with pytest.raises(KeyFileInsecure):
        FileKeyStore(path, kek).load()


def test_kek_comes_from_the_environment_or_a_private_file(tmp_path: os.PathLike[str]) -> None:
    kek = generate_kek()
    assert load_kek({"EDGEWAY_SECURITY_KEK": kek}) == kek.encode()
    assert load_kek({}) is None
    path = os.path.join(tmp_path, "kek")
    with open(path, "w") as f:
        f.write(kek + "\n")
    os.chmod(path, 0o600)
    assert load_kek({}, path) == kek.encode()
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileInsecure):
        load_kek({}, path)


def test_a_malformed_kek_is_reported_as_such() -> None:
    with pytest.raises(KeyDecryptionFailed, match="not a Fernet key"):
        FileKeyStore("/nonexistent", b"short")

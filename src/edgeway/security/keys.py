"""Signing keys: generation, key ids, a rotating key ring, and storage at rest.

* EdDSA (Ed25519) is the default: small keys, small signatures, no nonce to get wrong. ES256
  (P-256) is there for clients whose JOSE library lacks EdDSA.
* A key's ``kid`` is its RFC 7638 JWK thumbprint, so the same key always gets the same id and a
  ``kid`` cannot be made to point at another key.
* :class:`KeyRing` rotates with an overlap window: the new key signs at once, the previous key
  stays published in the JWKS until every token it signed has expired (``retire_at``), then
  :meth:`KeyRing.prune` drops it.
* :class:`FileKeyStore` keeps the ring in one JSON file written with mode 0600. With a
  key-encryption key (a Fernet key from ``EDGEWAY_SECURITY_KEK`` or a file) every private key is
  encrypted in it; without one the file mode is the only protection, so a file other users can
  read is refused. Nothing here ever puts private key material in a ``repr`` or a log line.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, cast

from cryptography.exceptions import InvalidSignature
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from edgeway.security.errors import (
    KeyDecryptionFailed,
    KeyFileInsecure,
    KeyStoreError,
    SecurityConfigError,
)

Algorithm = Literal["EdDSA", "ES256"]
ALGORITHMS: tuple[Algorithm, ...] = ("EdDSA", "ES256")
KEK_ENV = "EDGEWAY_SECURITY_KEK"

PrivateKey = Ed25519PrivateKey | ec.EllipticCurvePrivateKey
PublicKey = Ed25519PublicKey | ec.EllipticCurvePublicKey

_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
_P256_BYTES = 32


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(data: str | bytes) -> bytes:
    if isinstance(data, str):
        data = data.encode("ascii")
    return base64.urlsafe_b64decode(data + b"=" * (-len(data) % 4))


# --- JWK ------------------------------------------------------------------------------------------


def public_jwk(key: PublicKey) -> dict[str, str]:
    """The public JWK members for ``key`` (without ``kid``/``alg``/``use``)."""
    if isinstance(key, Ed25519PublicKey):
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(raw)}
    numbers = key.public_numbers()
    if not isinstance(key.curve, ec.SECP256R1):
        raise KeyStoreError(f"unsupported curve {key.curve.name}; only P-256 (ES256) is allowed")
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url_encode(numbers.x.to_bytes(_P256_BYTES, "big")),
        "y": b64url_encode(numbers.y.to_bytes(_P256_BYTES, "big")),
    }


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint: the required members only, sorted, no whitespace."""
    kty = jwk.get("kty")
    if kty == "OKP":
        members = {"crv": jwk["crv"], "kty": kty, "x": jwk["x"]}
    elif kty == "EC":
        members = {"crv": jwk["crv"], "kty": kty, "x": jwk["x"], "y": jwk["y"]}
    else:
        raise KeyStoreError(f"cannot take the thumbprint of a JWK with kty {kty!r}")
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return b64url_encode(hashlib.sha256(canonical).digest())


def public_key_from_jwk(jwk: Mapping[str, Any]) -> tuple[Algorithm, PublicKey]:
    """Parse one JWKS entry into ``(alg, public key)``; anything but Ed25519/P-256 is refused."""
    kty, crv = jwk.get("kty"), jwk.get("crv")
    try:
        if kty == "OKP" and crv == "Ed25519":
            return "EdDSA", Ed25519PublicKey.from_public_bytes(b64url_decode(jwk["x"]))
        if kty == "EC" and crv == "P-256":
            x = int.from_bytes(b64url_decode(jwk["x"]), "big")
            y = int.from_bytes(b64url_decode(jwk["y"]), "big")
            return "ES256", ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    except (KeyError, ValueError, TypeError) as exc:
        raise KeyStoreError(f"malformed {kty}/{crv} JWK: {exc}") from exc
    raise KeyStoreError(f"unsupported JWK kty={kty!r} crv={crv!r}; only Ed25519 and P-256 are accepted")


# --- signatures -----------------------------------------------------------------------------------


def sign(alg: Algorithm, key: PrivateKey, data: bytes) -> bytes:
    """A JWS signature: raw Ed25519, or ES256 as the fixed-size ``r || s`` (not DER)."""
    if alg == "EdDSA" and isinstance(key, Ed25519PrivateKey):
        return key.sign(data)
    if alg == "ES256" and isinstance(key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.sign(data, _ECDSA_SHA256))
        return r.to_bytes(_P256_BYTES, "big") + s.to_bytes(_P256_BYTES, "big")
    raise KeyStoreError(f"key type {type(key).__name__} cannot sign {alg}")


def verify_signature(alg: str, key: PublicKey, signature: bytes, data: bytes) -> bool:
    """True when ``signature`` over ``data`` is valid for ``key`` under ``alg``."""
    try:
        if alg == "EdDSA" and isinstance(key, Ed25519PublicKey):
            key.verify(signature, data)
            return True
        if alg == "ES256" and isinstance(key, ec.EllipticCurvePublicKey):
            if len(signature) != 2 * _P256_BYTES:
                return False
            r = int.from_bytes(signature[:_P256_BYTES], "big")
            s = int.from_bytes(signature[_P256_BYTES:], "big")
            key.verify(encode_dss_signature(r, s), data, _ECDSA_SHA256)
            return True
    except InvalidSignature:
        return False
    return False


# --- one key --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SigningKey:
    """A private signing key with its id and lifetime. ``repr`` never shows the key."""

    kid: str
    alg: Algorithm
    private_key: PrivateKey
    created_at: float
    # Set when a newer key took over: the key still verifies (stays in the JWKS) until then.
    retire_at: float | None = None

    @classmethod
    def generate(cls, alg: Algorithm = "EdDSA", now: float | None = None) -> SigningKey:
        private: PrivateKey
        if alg == "EdDSA":
            private = Ed25519PrivateKey.generate()
        elif alg == "ES256":
            private = ec.generate_private_key(ec.SECP256R1())
        else:
            raise SecurityConfigError(f"signing algorithm {alg!r} is not allowed; use EdDSA or ES256")
        return cls.from_private_key(private, alg, now)

    @classmethod
    def from_private_key(
        cls, private: PrivateKey, alg: Algorithm, now: float | None = None, retire_at: float | None = None
    ) -> SigningKey:
        kid = jwk_thumbprint(public_jwk(private.public_key()))
        created = time.time() if now is None else now
        return cls(kid=kid, alg=alg, private_key=private, created_at=created, retire_at=retire_at)

    @property
    def public_key(self) -> PublicKey:
        return self.private_key.public_key()

    def public_jwk(self) -> dict[str, str]:
        return {**public_jwk(self.public_key), "kid": self.kid, "alg": self.alg, "use": "sig"}

    def sign(self, data: bytes) -> bytes:
        return sign(self.alg, self.private_key, data)

    def private_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def __repr__(self) -> str:
        return (
            f"SigningKey(kid={self.kid!r}, alg={self.alg!r}, created_at={self.created_at:.0f}, "
            f"retire_at={self.retire_at}, private_key=<redacted>)"
        )

    __str__ = __repr__


# --- the ring -------------------------------------------------------------------------------------


class KeyRing:
    """The active signing key plus the retiring keys that must still verify.

    The active key is the newest key without ``retire_at``. Every key in the ring is published in
    the JWKS; a retiring key leaves only through :meth:`prune` once ``retire_at`` has passed.
    """

    def __init__(self, keys: Iterable[SigningKey]) -> None:
        self._keys: list[SigningKey] = sorted(keys, key=lambda k: k.created_at)
        if not any(k.retire_at is None for k in self._keys):
            raise KeyStoreError("the key ring has no active key (every key is retiring)")

    @classmethod
    def generate(cls, alg: Algorithm = "EdDSA", now: float | None = None) -> KeyRing:
        return cls([SigningKey.generate(alg, now)])

    @property
    def active(self) -> SigningKey:
        return [k for k in self._keys if k.retire_at is None][-1]

    @property
    def keys(self) -> tuple[SigningKey, ...]:
        return tuple(self._keys)

    def get(self, kid: str) -> SigningKey | None:
        for key in self._keys:
            if key.kid == kid:
                return key
        return None

    def rotate(self, overlap: float, alg: Algorithm | None = None, now: float | None = None) -> SigningKey:
        """Make a new active key; keys that were active keep verifying for ``overlap`` seconds.

        ``overlap`` must cover the longest access-token lifetime plus clock leeway, or tokens
        signed just before the rotation would fail before they expire.
        """
        at = time.time() if now is None else now
        new = SigningKey.generate(alg or self.active.alg, at)
        self._keys = [
            k if k.retire_at is not None else replace(k, retire_at=at + overlap) for k in self._keys
        ]
        self._keys.append(new)
        return new

    def prune(self, now: float | None = None) -> list[SigningKey]:
        """Drop retiring keys whose overlap window has ended; return them."""
        at = time.time() if now is None else now
        gone = [k for k in self._keys if k.retire_at is not None and k.retire_at <= at]
        self._keys = [k for k in self._keys if k not in gone]
        return gone

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [k.public_jwk() for k in self._keys]}

    def __repr__(self) -> str:
        return f"KeyRing(active={self.active.kid!r}, keys={[k.kid for k in self._keys]})"


# --- storage at rest ------------------------------------------------------------------------------


def generate_kek() -> str:
    """A new key-encryption key (a Fernet key) to put in ``EDGEWAY_SECURITY_KEK``."""
    return Fernet.generate_key().decode("ascii")


def load_kek(env: Mapping[str, str] | None = None, path: str | Path | None = None) -> bytes | None:
    """The key-encryption key from a file (if given) or ``$EDGEWAY_SECURITY_KEK``; None if neither."""
    if path is not None:
        file = Path(path)
        _refuse_readable_by_others(file, file.stat().st_mode, group_ok=False)
        return file.read_bytes().strip()
    value = (os.environ if env is None else env).get(KEK_ENV)
    return value.strip().encode("ascii") if value else None


def _refuse_readable_by_others(path: Path, mode: int, group_ok: bool) -> None:
    forbidden = stat.S_IRWXO if group_ok else (stat.S_IRWXG | stat.S_IRWXO)
    if mode & forbidden:
        raise KeyFileInsecure(str(path), stat.S_IMODE(mode))


class FileKeyStore:
    """A key ring in one JSON file, private keys Fernet-encrypted when a KEK is given.

    Plain files must be 0600 (0640 or wider is refused); encrypted files may be group-readable but
    never world-readable. Writes go to a 0600 temporary file that replaces the old one atomically.
    """

    def __init__(self, path: str | Path, kek: bytes | None = None) -> None:
        self.path = Path(path)
        self._fernet: Fernet | None = None
        if kek is not None:
            try:
                self._fernet = Fernet(kek)
            except ValueError as exc:
                raise KeyDecryptionFailed(
                    f"the key-encryption key is not a Fernet key ({exc}); make one with "
                    "`edgeway security keys kek`"
                ) from exc

    @property
    def encrypted(self) -> bool:
        return self._fernet is not None

    def exists(self) -> bool:
        return self.path.exists()

    def load(self) -> KeyRing:
        try:
            mode = self.path.stat().st_mode
        except FileNotFoundError as exc:
            raise KeyStoreError(
                f"no key file at {self.path}; create one with `edgeway security keys rotate`"
            ) from exc
        try:
            document = json.loads(self.path.read_text())
            encrypted = bool(document["encrypted"])
            entries = document["keys"]
        except (ValueError, KeyError, TypeError) as exc:
            raise KeyStoreError(f"{self.path} is not an edgeway key file: {exc}") from exc
        _refuse_readable_by_others(self.path, mode, group_ok=encrypted)
        if encrypted and self._fernet is None:
            raise KeyDecryptionFailed(
                f"{self.path} is encrypted; set {KEK_ENV} (or pass the KEK file) to the key that wrote it"
            )
        keys = [self._decode(entry, encrypted) for entry in entries]
        return KeyRing(keys)

    def save(self, ring: KeyRing) -> None:
        document = {
            "version": 1,
            "encrypted": self.encrypted,
            "keys": [self._encode(key) for key in ring.keys],
        }
        data = json.dumps(document, indent=2).encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # the umask cannot widen it, but an old tmp file could exist
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)

    def load_or_create(self, alg: Algorithm = "EdDSA") -> KeyRing:
        if self.exists():
            return self.load()
        ring = KeyRing.generate(alg)
        self.save(ring)
        return ring

    def _encode(self, key: SigningKey) -> dict[str, Any]:
        pem = key.private_pem()
        private = self._fernet.encrypt(pem).decode("ascii") if self._fernet else pem.decode("ascii")
        return {
            "kid": key.kid,
            "alg": key.alg,
            "created_at": key.created_at,
            "retire_at": key.retire_at,
            "private": private,
        }

    def _decode(self, entry: Mapping[str, Any], encrypted: bool) -> SigningKey:
        try:
            blob = entry["private"].encode("ascii")
            if encrypted and self._fernet is not None:  # load() refused encrypted without a KEK
                blob = self._fernet.decrypt(blob)
            private = serialization.load_pem_private_key(blob, password=None)
            alg = cast(Algorithm, entry["alg"])
        except InvalidToken as exc:
            raise KeyDecryptionFailed(
                f"cannot decrypt the keys in {self.path}: the key-encryption key is not the one they "
                "were written with"
            ) from exc
        except (KeyError, ValueError, TypeError) as exc:
            raise KeyStoreError(f"{self.path}: malformed key entry ({type(exc).__name__})") from exc
        if alg not in ALGORITHMS or not isinstance(private, Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
            raise KeyStoreError(f"{self.path}: key {entry.get('kid')!r} has unsupported algorithm {alg!r}")
        key = SigningKey.from_private_key(private, alg, float(entry["created_at"]), entry.get("retire_at"))
        if key.kid != entry["kid"]:
            raise KeyStoreError(f"{self.path}: key {entry['kid']!r} does not match its thumbprint")
        return key

    def __repr__(self) -> str:
        return f"FileKeyStore(path={str(self.path)!r}, encrypted={self.encrypted})"

"""Errors raised by ``edgeway.security``.

Names read as the condition (``TokenExpired``), like HTTP reason phrases, hence the N818 waivers.

Hierarchy::

    SecurityError                     base of everything below
    ├── KeyStoreError                 signing keys: loading, storing, decrypting
    │   ├── KeyFileInsecure           a private key file others can read
    │   └── KeyDecryptionFailed       wrong or missing key-encryption key
    ├── TokenError                    a token was refused; maps to HTTP 401
    │   ├── TokenMissing              no token where one is required
    │   ├── TokenInvalid(reason)      malformed, bad signature, wrong iss/aud, disallowed alg ...
    │   │   ├── TokenUnknownKey       its ``kid`` is not in the key set (yet)
    │   │   └── TokenNotYetValid      ``nbf``/``iat`` in the future beyond the leeway
    │   ├── TokenExpired              ``exp`` in the past beyond the leeway
    │   └── TokenRevoked              its ``jti`` is on the deny-list
    ├── JwksUnavailable               the key set could not be fetched and none is cached
    ├── PolicyError                   a policy document that does not parse
    └── SecurityConfigError           settings or a seed file that cannot be used

Every ``TokenError`` carries a short machine ``reason`` (``"expired"``, ``"bad_signature"``,
...) that the gateway puts in ``WWW-Authenticate`` and the problem body; the message is for
people and never contains key material or the token itself.
"""

from __future__ import annotations


class SecurityError(Exception):
    """Base class of every error raised by ``edgeway.security``."""


class KeyStoreError(SecurityError):
    """A signing key could not be loaded, stored or used."""


class KeyFileInsecure(KeyStoreError):
    """A private key file is readable by other users; fix its mode (``chmod 600``)."""

    def __init__(self, path: str, mode: int) -> None:
        super().__init__(
            f"refusing to load {path}: mode {mode:04o} lets other users read private keys; "
            f"run `chmod 600 {path}`"
        )
        self.path = path
        self.mode = mode


class KeyDecryptionFailed(KeyStoreError):
    """The key file is encrypted and the key-encryption key is missing or wrong."""


class TokenError(SecurityError):
    """A token was refused. ``reason`` is a short, stable machine code."""

    reason: str = "invalid_token"
    status: int = 401

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class TokenMissing(TokenError):
    reason = "missing"

    def __init__(self, message: str = "no bearer token was sent") -> None:
        super().__init__(message)


class TokenInvalid(TokenError):
    """The token is not acceptable; ``reason`` says why (``bad_signature``, ``bad_audience``...)."""

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(message or f"token rejected: {reason.replace('_', ' ')}", reason)


class TokenUnknownKey(TokenInvalid):
    """The ``kid`` is not in the current key set; a JWKS refresh may find it."""

    def __init__(self, kid: str) -> None:
        super().__init__("unknown_kid", f"token rejected: no key with kid {kid!r} in the key set")
        self.kid = kid


class TokenNotYetValid(TokenInvalid):
    def __init__(self, message: str) -> None:
        super().__init__("not_yet_valid", message)


class TokenExpired(TokenError):
    reason = "expired"

    def __init__(self, message: str = "token expired") -> None:
        super().__init__(message)


class TokenRevoked(TokenError):
    reason = "revoked"

    def __init__(self, message: str = "token has been revoked") -> None:
        super().__init__(message)


class JwksUnavailable(SecurityError):
    """No key set: the first fetch failed and nothing is cached."""


class PolicyError(SecurityError):
    """A policy document is malformed; the message names the policy and the field."""


class SecurityConfigError(SecurityError):
    """Settings or a seed file cannot be used; the message names the field."""

"""Who may use the admin API: a bearer token, same-host names, no browser-driven writes.

The admin port can reload the config, purge the cache and show the routes and metrics, so:

* **a token** is required on every endpoint except the probes (``/healthz``; ``/readyz`` answers
  its status to anyone, its detail only with the token). The token comes from
  ``admin.token_file``, else from the ``EDGEWAY_ADMIN_TOKEN`` environment variable. With neither,
  a gateway whose admin API listens on loopback generates one at start and writes it, readable
  by its user only, to ``<runtime dir>/admin-<port>.token`` (:func:`token_path`), where
  ``edgeway`` tools and tests find it (:func:`find_token`); a gateway whose admin API listens
  beyond loopback refuses to start without one, and warns that it listens there when it has one.
* **the Host** must be an IP address, ``localhost`` or a name in ``admin.hosts``: a web page
  whose DNS name is rebound to 127.0.0.1 sends its own name, and is refused (421).
* **writes** (``POST``) must say ``Content-Type: application/json`` and carry no ``Origin`` or
  cross-site ``Sec-Fetch-Site``: a browser sends those on every cross-origin request, and a
  ``text/plain`` form post needs no CORS preflight. Command-line clients send neither.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
import stat
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Final

from edgeway.gateway.core.errors import ConfigError, ConfigIssue

if TYPE_CHECKING:
    from edgeway.gateway.process.config import AdminListen
    from edgeway.http.exchange import Exchange

TOKEN_ENV: Final = "EDGEWAY_ADMIN_TOKEN"
# The probes an orchestrator calls without credentials.
PUBLIC_PATHS: Final = frozenset({b"/healthz", b"/readyz"})
_READ_METHODS: Final = frozenset({b"GET", b"HEAD"})
_SAME_SITE: Final = frozenset({b"same-origin", b"none"})


class AdminRefusal(Exception):
    """A request the admin API does not serve: answered as a problem with ``status``."""

    def __init__(self, status: int, title: str, detail: str, headers: list[tuple[bytes, bytes]]) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.headers = headers


# --------------------------------------------------------------------------- the token


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def _issue(message: str) -> ConfigError:
    return ConfigError([ConfigIssue("<admin>", None, None, "admin", message)])


def configured_token(admin: AdminListen, env: Mapping[str, str] | None = None) -> str | None:
    """The token ``admin.token_file`` or ``EDGEWAY_ADMIN_TOKEN`` gives; None when neither does."""
    if admin.token_file is not None:
        try:
            token = Path(admin.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise _issue(f"admin.token_file {admin.token_file!r} cannot be read: {exc.strerror}") from None
        if not token:
            raise _issue(f"admin.token_file {admin.token_file!r} is empty")
        return token
    token = (os.environ if env is None else env).get(TOKEN_ENV, "").strip()
    return token or None


def resolve_token(admin: AdminListen, env: Mapping[str, str] | None = None) -> tuple[str, bool]:
    """The admin API's token and whether it was generated here (and so must be written out for
    clients: :func:`write_token`). ConfigError when the admin API listens beyond loopback
    without one."""
    token = configured_token(admin, env)
    if token is not None:
        return token, False
    if not is_loopback(admin.host):
        raise _issue(
            f"the admin API listens on {admin.host}, beyond loopback, without a token: set "
            f"admin.token_file or {TOKEN_ENV} (or listen on 127.0.0.1)"
        )
    return secrets.token_urlsafe(32), True


def runtime_dir() -> Path:
    """Where a generated token is written: ``$XDG_RUNTIME_DIR/edgeway``, else a per-user directory
    in the temporary directory. Created private (0700); refused when another user owns it."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    path = Path(base) / "edgeway" if base else Path(tempfile.gettempdir()) / f"edgeway-{os.getuid()}"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        # Someone else's directory (or a symlink planted in /tmp): a token there is theirs to read.
        raise PermissionError(f"{path} is not a private directory of this user")
    return path


def token_path(port: int) -> Path:
    return runtime_dir() / f"admin-{port}.token"


def write_token(port: int, token: str) -> Path:
    """Write ``token`` for the admin API on ``port``, readable by this user only."""
    path = token_path(port)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(token + "\n")
    temporary.replace(path)
    return path


def remove_token(path: Path, token: str) -> None:
    """Remove a token file this process wrote (unless another gateway took the port since)."""
    try:
        if path.read_text(encoding="utf-8").strip() == token:
            path.unlink()
    except OSError:
        pass


def find_token(port: int, admin: AdminListen | None = None) -> str | None:
    """The token a client of the admin API on ``port`` should send: ``EDGEWAY_ADMIN_TOKEN``, the
    config's ``admin.token_file``, or the token a loopback gateway generated for that port."""
    token = os.environ.get(TOKEN_ENV, "").strip()
    if token:
        return token
    if admin is not None and admin.token_file is not None:
        return configured_token(admin)
    try:
        return token_path(port).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def bearer(token: str) -> bytes:
    """The Authorization header value for ``token``."""
    return b"Bearer " + token.encode()


# --------------------------------------------------------------------------- the checks


class AdminGuard:
    """Checks one admin request (see the module docstring); :meth:`check` raises AdminRefusal."""

    __slots__ = ("_expected", "_hosts")

    def __init__(self, token: str, hosts: Iterable[str] = ()) -> None:
        self._expected = token.encode()
        self._hosts = frozenset(h.lower().encode() for h in (*hosts, "localhost"))

    def check(self, ex: Exchange) -> bool:
        """Raise AdminRefusal for a request the admin API must not serve; True when it carries
        the token, False for a probe without one."""
        if not self._host_allowed(ex.host):
            raise AdminRefusal(
                421,
                "Misdirected Request",
                "the admin API answers to IP addresses, localhost and admin.hosts only",
                [],
            )
        authorised = self._authorised(ex)
        if ex.path in PUBLIC_PATHS and ex.method in _READ_METHODS:
            return authorised
        if not authorised:
            raise AdminRefusal(
                401,
                "Unauthorized",
                f"the admin API needs 'Authorization: Bearer <token>' (admin.token_file or {TOKEN_ENV})",
                [(b"www-authenticate", b'Bearer realm="edgeway-admin"')],
            )
        if ex.method not in _READ_METHODS:
            site = ex.header(b"sec-fetch-site")
            if ex.header(b"origin") is not None or (site is not None and site.lower() not in _SAME_SITE):
                raise AdminRefusal(403, "Forbidden", "the admin API takes no cross-origin writes", [])
            media = (ex.header(b"content-type") or b"").partition(b";")[0].strip().lower()
            if media != b"application/json":
                raise AdminRefusal(
                    415,
                    "Unsupported Media Type",
                    "admin writes must be sent as Content-Type: application/json",
                    [(b"accept-post", b"application/json")],
                )
        return True

    def _authorised(self, ex: Exchange) -> bool:
        found: bytes | None = None
        for name, value in ex.headers:
            if name.lower() == b"authorization":
                if found is not None:
                    return False  # two credentials: the server refuses these anyway
                found = value
        if found is None:
            return False
        scheme, _, credential = found.strip().partition(b" ")
        # Constant time: the comparison must not tell how much of a guess was right.
        return scheme.lower() == b"bearer" and hmac.compare_digest(credential.strip(), self._expected)

    def _host_allowed(self, host: bytes) -> bool:
        host = host.lower()
        if host.startswith(b"["):
            name = host[1 : host.find(b"]")] if b"]" in host else b""
        else:
            name = host.rpartition(b":")[0] if b":" in host else host
        if name in self._hosts:
            return True
        try:
            ipaddress.ip_address(name.decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            return False
        return True

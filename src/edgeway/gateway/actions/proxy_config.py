"""Config of the proxy action (``proxy`` on a route): the service, the upstream path (strip a
prefix or rewrite), header changes, WebSocket tunnelling."""

from __future__ import annotations

from pydantic import Field, PrivateAttr, model_validator

from edgeway.gateway.config.base import HeaderName, HeaderValue, LocatedProblemsError, StrictModel
from edgeway.gateway.config.keypath import Loc
from edgeway.gateway.config.patterns import PathPattern, PatternError, RewriteTemplate, parse_rewrite
from edgeway.gateway.config.units import Duration


class HeaderRules(StrictModel):
    """Header changes; `remove` runs before `set`."""

    set: dict[HeaderName, HeaderValue] = Field(
        default_factory=dict, description="Headers to set, replacing any value already present."
    )
    remove: list[HeaderName] = Field(default_factory=list, description="Header names to remove.")

    @model_validator(mode="after")
    def _no_conflict(self) -> HeaderRules:
        removed = {name.lower() for name in self.remove}
        problems: list[tuple[Loc, str]] = [
            (("set", name), f"header '{name}' is both set and removed; keep one")
            for name in self.set
            if name.lower() in removed
        ]
        if problems:
            raise LocatedProblemsError(problems)
        return self

    @property
    def is_empty(self) -> bool:
        return not self.set and not self.remove


class ProxyAction(StrictModel):
    """Forward the request to a service."""

    service: str = Field(description="Name of a service under `services`.")
    strip_prefix: str | None = Field(
        None, description="Literal leading path segments to remove before forwarding, e.g. `/catalog`."
    )
    rewrite: str | None = Field(
        None,
        description="Upstream path template; may use the path's `{name}` parameters and `{**}` "
        "(the rest matched by a `/**` pattern); its text is visible ASCII (percent-encode the rest).",
    )
    request_headers: HeaderRules = Field(
        default_factory=HeaderRules, description="Changes to the request headers sent upstream."
    )
    response_headers: HeaderRules = Field(
        default_factory=HeaderRules, description="Changes to the response headers sent to the client."
    )
    websocket: bool = Field(False, description="Allow `Upgrade: websocket` tunnelling on this route.")
    websocket_idle_timeout: Duration = Field(
        300.0, gt=0, description="A tunnelled WebSocket with no traffic either way is closed after this."
    )

    _rewrite: RewriteTemplate | None = PrivateAttr(None)
    _strip: tuple[str, ...] = PrivateAttr(())

    @property
    def rewrite_template(self) -> RewriteTemplate | None:
        return self._rewrite

    @property
    def strip_segments(self) -> tuple[str, ...]:
        return self._strip

    def bind(self, pattern: PathPattern) -> list[tuple[Loc, str]]:
        """Check strip_prefix/rewrite against the route's pattern and keep the parsed forms."""
        problems: list[tuple[Loc, str]] = []
        if self.rewrite is not None and self.strip_prefix is not None:
            problems.append((("rewrite",), "set either strip_prefix or rewrite, not both"))
        if self.rewrite is not None:
            try:
                self._rewrite = parse_rewrite(self.rewrite, pattern)
            except PatternError as exc:
                problems.append((("rewrite",), str(exc)))
        if self.strip_prefix is not None:
            strip = self.strip_prefix.rstrip("/")
            segments = tuple(strip[1:].split("/")) if strip else ()
            if not self.strip_prefix.startswith("/") or "{" in strip or "*" in strip:
                problems.append(
                    (
                        ("strip_prefix",),
                        f"strip_prefix {self.strip_prefix!r} must be a literal path starting with '/'",
                    )
                )
            elif pattern.literal_prefix()[: len(segments)] != segments:
                problems.append(
                    (
                        ("strip_prefix",),
                        f"strip_prefix {self.strip_prefix!r} is not a prefix of the literal start of "
                        f"path {pattern.text!r}, so it would not apply to every matched request",
                    )
                )
            else:
                self._strip = segments
        return problems

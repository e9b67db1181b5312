"""Config of the proxy action (``proxy`` on a route): the service (or a weighted split between
services, canary rules, a sticky key, a mirror: :mod:`edgeway.gateway.traffic.config`), the
upstream path (strip a prefix or rewrite), header changes, WebSocket tunnelling."""

from __future__ import annotations

from pydantic import Field, PrivateAttr, model_validator

from edgeway.gateway.config.base import HeaderName, HeaderValue, LocatedProblemsError, StrictModel
from edgeway.gateway.config.keypath import Loc
from edgeway.gateway.config.patterns import PathPattern, PatternError, RewriteTemplate, parse_rewrite
from edgeway.gateway.config.units import Duration
from edgeway.gateway.traffic.config import CanaryRule, MirrorRule, SplitSide, StickyRule, check_split
from edgeway.gateway.traffic.strangler_config import StranglerRule


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

    service: str | None = Field(
        None, description="Name of a service under `services`; required unless `split` is set."
    )
    split: list[SplitSide] | None = Field(
        None,
        description="A weighted split between services instead of one `service`: percentages that "
        "sum to 100. Weights can change at run time (a controller, a live reload).",
    )
    canary: list[CanaryRule] = Field(
        default_factory=list,
        description="Rules tried in order before the split: the first whose conditions a request "
        "meets (header, cookie, query values) sends it to its service.",
    )
    sticky: StickyRule | None = Field(
        None,
        description="Consistent hashing on a request key (header, cookie or the authenticated "
        "subject): the same key goes to the same side of the split and the same instance.",
    )
    mirror: MirrorRule | None = Field(
        None, description="Copy a share of the requests to another service; its answers are discarded."
    )
    strangler: StranglerRule | None = Field(
        None,
        description="Move the route from an old service to a new one in steps, instead of `service` "
        "or `split`: advanced on a schedule, rolled back when the new side does worse.",
    )
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
    grpc_web: bool = Field(
        False,
        description="Translate gRPC-Web (`application/grpc-web`, `-text`) from browsers into gRPC "
        "calls to the service (`protocol: h2`), as Envoy's `grpc_web` filter does. Off: a gRPC-Web "
        "request passes through untouched, for services that speak gRPC-Web themselves.",
    )
    websocket_idle_timeout: Duration = Field(
        300.0, gt=0, description="A tunnelled WebSocket with no traffic either way is closed after this."
    )

    _rewrite: RewriteTemplate | None = PrivateAttr(None)
    _strip: tuple[str, ...] = PrivateAttr(())

    @model_validator(mode="after")
    def _service_or_split(self) -> ProxyAction:
        problems: list[tuple[Loc, str]] = []
        if self.strangler is not None and (self.service is not None or self.split is not None):
            problems.append(
                (("strangler",), "a strangler names its services (old, new): remove `service` and `split`")
            )
        elif self.service is not None and self.split is not None:
            problems.append((("split",), "set either `service` or `split`, not both"))
        elif self.service is None and self.split is None and self.strangler is None:
            problems.append((("service",), "a proxy needs a `service` (or a `split` between services)"))
        if self.split is not None:
            problems += [(("split", *loc), message) for loc, message in check_split(self.split)]
        if self.mirror is not None:
            mirrored = self.mirror.service
            if mirrored in self.split_services:
                problems.append(
                    (
                        ("mirror", "service"),
                        f"'{mirrored}' already takes this route's requests; mirror to another service",
                    )
                )
        if problems:
            raise LocatedProblemsError(problems)
        return self

    @property
    def split_services(self) -> tuple[str, ...]:
        """The services the route splits between: its one `service`, or the split's sides."""
        if self.split is not None:
            return tuple(side.service for side in self.split)
        if self.strangler is not None:
            return (self.strangler.old, self.strangler.new)
        return (self.service,) if self.service is not None else ()

    @property
    def shifts_traffic(self) -> bool:
        """True when the route uses any traffic-shifting feature (the plain proxy does not)."""
        return (
            self.split is not None
            or bool(self.canary)
            or self.sticky is not None
            or self.mirror is not None
            or self.strangler is not None
        )

    @property
    def split_sides(self) -> list[SplitSide] | None:
        """The route's split: the configured one, or a strangler's (everything on the old side to
        begin with; the strangler sets the weights of its step)."""
        if self.strangler is not None:
            return [
                SplitSide(service=self.strangler.old, weight=100),
                SplitSide(service=self.strangler.new, weight=0),
            ]
        return self.split

    def service_refs(self) -> list[tuple[Loc, str]]:
        """Every service the route sends to, with its key path relative to the proxy block."""
        refs: list[tuple[Loc, str]] = []
        if self.service is not None:
            refs.append((("service",), self.service))
        refs += [(("split", i, "service"), side.service) for i, side in enumerate(self.split or ())]
        refs += [(("canary", i, "service"), rule.service) for i, rule in enumerate(self.canary)]
        if self.mirror is not None:
            refs.append((("mirror", "service"), self.mirror.service))
        if self.strangler is not None:
            refs += [(("strangler", "old"), self.strangler.old), (("strangler", "new"), self.strangler.new)]
        return refs

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

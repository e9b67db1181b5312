"""Traffic-shifting config: every mistake is refused at load with its file, line, column, key and
an actionable message, all of them in one run."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from edgeway.gateway.config import ConfigError, load_config

HEAD = """\
services:
  v1: {instances: ["http://127.0.0.1:9001"]}
  v2: {instances: ["http://127.0.0.1:9002", "http://127.0.0.1:9003"]}
  shadow: {instances: ["http://127.0.0.1:9004"]}
routes:
"""


def problems(tmp_path: Path, routes: str, head: str = HEAD) -> list[str]:
    path = tmp_path / "gw.yaml"
    path.write_text(head + textwrap.dedent(routes), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    return [str(issue).removeprefix(f"{path}:") for issue in caught.value.issues]


def test_a_valid_traffic_config_loads(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(
        HEAD
        + textwrap.dedent(
            """\
            - match: {path: /a/**}
              proxy:
                split: [{service: v1, weight: 33.33}, {service: v2, weight: 66.67}]
                canary: [{service: v2, headers: {X-Beta: "1"}, cookies: {beta: "1"}, query: {v: "2"}}]
                sticky: {cookie: session}
                mirror: {service: shadow, fraction: 0.1, max_body: 16KiB, timeout: 500ms}
            """
        ),
        encoding="utf-8",
    )
    route = load_config(path, env={}).routes[0]
    assert route.proxy is not None
    assert route.proxy.split_services == ("v1", "v2")
    assert route.proxy.mirror is not None
    assert (route.proxy.mirror.max_body, route.proxy.mirror.timeout) == (16384, 0.5)


def test_split_mistakes_name_the_place(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        - match: {path: /a/**}
          proxy:
            split: [{service: v1, weight: 10}, {service: v2, weight: 80}]
        - match: {path: /b/**}
          proxy:
            service: v1
            split: [{service: v1, weight: 50}, {service: v2, weight: 50}]
        - match: {path: /c/**}
          proxy:
            split:
              - {service: v1, weight: 50}
              - {service: v1, weight: 50}
        - match: {path: /d/**}
          proxy:
            split: [{service: v1, weight: 100}]
        - match: {path: /e/**}
          proxy:
            split: [{service: v1, weight: 120}, {service: v2, weight: -20}]
        - match: {path: /f/**}
          proxy: {strip_prefix: /f}
        """,
    )
    assert found == [
        "8:5: routes[0].proxy.split: the weights must sum to 100 (percent); they sum to 10 + 80 = 90",
        "12:5: routes[1].proxy.split: set either `service` or `split`, not both",
        "17:10: routes[2].proxy.split[1].service: service 'v1' is already split[0]; list each once",
        "20:5: routes[3].proxy.split: a split needs two sides or more; with one, set `service` instead",
        "23:27: routes[4].proxy.split[0].weight: Input should be less than or equal to 100",
        "23:55: routes[4].proxy.split[1].weight: Input should be greater than or equal to 0",
        "25:3: routes[5].proxy.service: a proxy needs a `service` (or a `split` between services)",
    ]


def test_unknown_services_anywhere_in_a_proxy_are_named(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        - match: {path: /a/**}
          proxy:
            split: [{service: v1, weight: 50}, {service: v3, weight: 50}]
            canary: [{service: beta, headers: {X-Beta: "1"}}]
            mirror: {service: shadw}
        """,
    )
    known = "(known: shadow, v1, v2)"
    assert found == [
        f"8:41: routes[0].proxy.split[1].service: unknown service 'v3' {known}",
        f"9:15: routes[0].proxy.canary[0].service: unknown service 'beta' {known}",
        f"10:14: routes[0].proxy.mirror.service: unknown service 'shadw' {known}",
    ]


def test_unknown_services_are_reported_with_other_mistakes_in_one_run(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        - match: {path: /a/**}
          proxy:
            split: [{service: v1, weight: 50}, {service: v3, weight: 50}]
            mirror: {service: shadow, fraction: 2}
        """,
    )
    assert found == [
        "8:41: routes[0].proxy.split[1].service: unknown service 'v3' (known: shadow, v1, v2)",
        "9:31: routes[0].proxy.mirror.fraction: Input should be less than or equal to 1",
    ]


def test_canary_sticky_and_mirror_mistakes(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        - match: {path: /a/**}
          proxy:
            service: v1
            canary: [{service: v2}, {service: v2, cookies: {"bad name": "1"}, query: {"": "1"}}]
            sticky: {header: X-User, cookie: session}
            mirror: {service: v1, max_in_flight: 0, timeout: soon}
        - match: {path: /b/**}
          proxy: {service: v1, sticky: {}}
        """,
    )
    assert found == [
        "9:14: routes[0].proxy.canary[0]: a canary rule needs a condition: `headers`, `cookies` or `query`",
        "9:53: routes[0].proxy.canary[1].cookies['bad name']: 'bad name' is not a valid cookie name",
        "9:79: routes[0].proxy.canary[1].query['']: '' is not a valid query parameter name",
        "10:5: routes[0].proxy.sticky: sticky needs exactly one of: header, cookie, subject: true "
        "(found: header, cookie)",
        "11:27: routes[0].proxy.mirror.max_in_flight: Input should be greater than or equal to 1",
        "11:45: routes[0].proxy.mirror.timeout: invalid duration 'soon': use a number of seconds or a "
        "number with a unit (ms, s, m, h, d), e.g. 250ms or 2s",
        "13:24: routes[1].proxy.sticky: sticky needs exactly one of: header, cookie, subject: true "
        "(found: none)",
    ]


def test_sticky_on_the_subject_needs_auth_on_the_route(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        - match: {path: /c/**}
          proxy: {service: v1, sticky: {subject: true}}
        - match: {path: /d/**}
          auth: {mode: none}
          proxy: {service: v1, sticky: {subject: true}}
        """,
        "auth: {jwks_url: 'http://127.0.0.1:9/jwks', issuer: i, audience: a}\n" + HEAD,
    )
    assert found == [
        "8:33: routes[0].proxy.sticky.subject: sticky on the subject needs `auth` (required or optional) "
        "on this route",
        "11:33: routes[1].proxy.sticky.subject: sticky on the subject needs `auth` (required or optional) "
        "on this route",
    ]


def test_a_mirror_to_a_service_that_takes_the_route_is_refused(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        - match: {path: /a/**}
          proxy:
            split: [{service: v1, weight: 50}, {service: v2, weight: 50}]
            mirror: {service: v2}
        """,
    )
    assert found == [
        "9:14: routes[0].proxy.mirror.service: 'v2' already takes this route's requests; "
        "mirror to another service"
    ]


def test_instance_weights_must_name_an_instance(tmp_path: Path) -> None:
    head = """\
services:
  v1:
    instances: ["http://127.0.0.1:9001", "http://127.0.0.1:9002"]
    weights: {"http://127.0.0.1:9001": 3, "http://127.0.0.1:9009": 2, "http://127.0.0.1:9002": 0}
routes:
"""
    found = problems(tmp_path, "- match: {path: /**}\n  proxy: {service: v1}\n", head)
    assert found == [
        "4:71: services.v1.weights['http://127.0.0.1:9002']: Input should be greater than or equal to 1",
    ]
    head = head.replace(', "http://127.0.0.1:9002": 0', "")
    found = problems(tmp_path, "- match: {path: /**}\n  proxy: {service: v1}\n", head)
    assert found == [
        "4:43: services.v1.weights['http://127.0.0.1:9009']: 'http://127.0.0.1:9009' is not one of this "
        "service's instances (http://127.0.0.1:9001, http://127.0.0.1:9002)",
    ]

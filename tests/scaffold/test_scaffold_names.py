"""A scaffolded name must work as a package, a channel, a route id, an env prefix and a DNS label;
a bad one is refused with what would do instead."""

from __future__ import annotations

import pytest

from edgeway.scaffold.names import MAX_LENGTH, ScaffoldNameError, check_name


def test_a_name_gives_every_form_the_templates_use() -> None:
    names = check_name("service", "order-history2")
    assert names.as_data() == {
        "name": "order-history2",
        "package": "order_history2",
        "class_name": "OrderHistory2",
        "env": "ORDER_HISTORY2",
    }


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "the service needs a name"),
        ("Orders", "'Orders' is not valid: use lowercase letters, digits and single hyphens, starting with "
                   "a letter (for example 'orders')"),
        ("order_history", "(for example 'order-history')"),
        ("2fa", "starting with a letter"),
        ("orders-", "single hyphens"),
        ("a--b", "single hyphens"),
        ("../etc", "(for example 'etc')"),
        ("a" * (MAX_LENGTH + 1), f"is {MAX_LENGTH + 1} characters long; at most {MAX_LENGTH}"),
        ("json", "would make a Python package 'json' that hides a module of the same name"),
        ("edgeway", "hides a module"),
        ("class", "hides a module"),
    ],
)  # fmt: skip
def test_a_bad_name_is_refused_saying_why(name: str, message: str) -> None:
    with pytest.raises(ScaffoldNameError) as info:
        check_name("service", name)
    assert message in str(info.value)

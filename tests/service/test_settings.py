from __future__ import annotations

from pathlib import Path

import pytest

from edgeway.service.errors import SettingsError
from edgeway.service.settings import ServiceSettings


class OrdersSettings(ServiceSettings):
    database_url: str = "sqlite+aiosqlite:///orders.db"
    page_size: int = 20


def test_file_values_are_read_and_env_overrides_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "orders.yaml"
    file.write_text("service_name: orders\npage_size: 50\nservices:\n  inventory: [http://inv:8000]\n")
    monkeypatch.setenv("EDGEWAY_PAGE_SIZE", "75")
    settings = OrdersSettings.load(file)
    assert settings.service_name == "orders"
    assert settings.page_size == 75
    assert settings.services == {"inventory": ["http://inv:8000"]}


def test_keyword_overrides_beat_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEWAY_LOG_LEVEL", "debug")
    assert ServiceSettings.load(log_level="warning").log_level == "warning"
    assert ServiceSettings.load().log_level == "debug"


def test_settings_file_can_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "s.json"
    file.write_text('{"registry_ttl": 9}')
    monkeypatch.setenv("EDGEWAY_SETTINGS_FILE", str(file))
    assert ServiceSettings.load().registry_ttl == 9


def test_missing_file_is_reported_by_path(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        ServiceSettings.load(tmp_path / "nope.yaml")


def test_invalid_value_names_the_field_and_the_file(tmp_path: Path) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text("page_size: many\n")
    with pytest.raises(SettingsError, match=r"page_size[\s\S]*bad.yaml|bad.yaml[\s\S]*page_size"):
        OrdersSettings.load(file)


def test_nested_services_map_from_env_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEWAY_SERVICES", '{"cart": ["http://cart:1"]}')
    assert ServiceSettings.load().services == {"cart": ["http://cart:1"]}

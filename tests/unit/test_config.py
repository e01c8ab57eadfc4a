"""Settings: defaults, environment, overrides, validation errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamrec.errors import ConfigError, StreamrecError
from streamrec.ops.settings import Settings, load_settings


def test_defaults() -> None:
    s = load_settings()
    assert s.top_k == 10
    assert s.bootstrap_servers == "127.0.0.1:9092"
    assert s.events_topic == "streamrec.events"
    assert s.recs_topic == "streamrec.recommendations"
    assert s.dlq_topic == "streamrec.events.dlq"
    assert s.exclude_history is True
    assert s.unknown_item_policy == "accept"
    assert s.max_event_bytes == 65536
    assert s.security_protocol == "PLAINTEXT"
    assert s.db_url.startswith("sqlite")


def test_settings_are_frozen() -> None:
    s = load_settings()
    with pytest.raises(Exception, match="frozen"):
        s.top_k = 3  # type: ignore[misc]


def test_env_var_is_respected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMREC_TOP_K", "17")
    monkeypatch.setenv("STREAMREC_EXCLUDE_HISTORY", "false")
    s = load_settings()
    assert s.top_k == 17
    assert s.exclude_history is False


def test_explicit_override_beats_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMREC_TOP_K", "17")
    assert load_settings(top_k=3).top_k == 3


def test_none_override_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMREC_TOP_K", "17")
    assert load_settings(top_k=None).top_k == 17
    assert load_settings(group_id=None).group_id == "streamrec"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("top_k", 0),
        ("top_k", "many"),
        ("metrics_port", 70000),
        ("unknown_item_policy", "drop"),
        ("bootstrap_servers", "  "),
        ("max_event_bytes", 1),
        ("security_protocol", "TLS"),
    ],
)
def test_invalid_value_raises_config_error_naming_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field) as info:
        load_settings(**{field: value})
    assert isinstance(info.value, StreamrecError)
    assert info.value.__cause__ is None  # no pydantic traceback chained


def test_invalid_env_value_names_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMREC_TOP_K", "zero")
    with pytest.raises(ConfigError, match="top_k"):
        load_settings()


def test_unknown_setting_is_rejected() -> None:
    with pytest.raises(ConfigError, match="top_kk"):
        load_settings(top_kk=3)


def test_safe_db_url_hides_password() -> None:
    s = load_settings(db_url="postgresql+psycopg://worker:hunter2@db.example:5432/recs")
    safe = s.safe_db_url()
    assert "hunter2" not in safe
    assert "worker" in safe and "db.example" in safe and "/recs" in safe
    assert load_settings(db_url="sqlite:///x.db").safe_db_url() == "sqlite:///x.db"


def test_secret_password_not_in_repr() -> None:
    s = load_settings(security_protocol="SASL_SSL", sasl_password="hunter2")
    assert "hunter2" not in repr(s)


def test_kafka_security_plaintext() -> None:
    assert load_settings().kafka_security() == {"security_protocol": "PLAINTEXT"}


def test_kafka_security_sasl_ssl(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    s = load_settings(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="svc",
        sasl_password="hunter2",
        ssl_cafile=ca,
    )
    assert s.kafka_security() == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "svc",
        "sasl_plain_password": "hunter2",
        "ssl_cafile": str(ca),
    }


def test_settings_class_reads_env_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMREC_DB_URL", "sqlite:///from-env.db")
    assert Settings().db_url == "sqlite:///from-env.db"


def test_printing_settings_never_shows_secrets() -> None:
    s = load_settings(
        db_url="postgresql+psycopg://u:hunter2@db.example/app", sasl_password="s3cret-pw"
    )
    for text in (repr(s), str(s), f"{s}"):
        assert "hunter2" not in text and "s3cret-pw" not in text
    assert "u:***@db.example" in repr(s)
    assert set(s.secret_values()) == {"hunter2", "s3cret-pw"}

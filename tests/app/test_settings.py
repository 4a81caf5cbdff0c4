"""Settings: the env-variable contract, validation, and one-line start-up errors."""

from __future__ import annotations

import subprocess

import pytest
from pydantic import SecretStr

from app.settings import ConfigError, Settings, load_settings

from .conftest import CLI, subprocess_env


def test_defaults_match_the_cloud_init_contract() -> None:
    settings = load_settings()

    assert settings.STORAGE_BACKEND == "local"
    assert settings.LOCAL_STORAGE_PATH == ".local-store"
    assert (settings.LEASE_SECONDS, settings.MAX_ATTEMPTS) == (60, 3)
    assert settings.MAX_UPLOAD_BYTES == 20 * 1024 * 1024
    assert settings.WORKER_GRACE_SECONDS == 20 and settings.WORKER_POLL_SECONDS == 2
    assert settings.EVICTION_WATCH == "off" and settings.EVICTION_POLL_SECONDS == 5
    assert settings.GCP_METADATA_URL.endswith("/computeMetadata/v1/instance/preempted")
    assert settings.AZURE_SCHEDULED_EVENTS_URL.startswith("http://169.254.169.254/metadata/scheduledevents")
    assert settings.READ_ONLY is False and settings.LOG_LEVEL == "INFO"
    assert settings.WORKER_ID


def test_values_come_from_unprefixed_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_BACKEND", "GCP")
    monkeypatch.setenv("GCS_BUCKET", "spotshift-data")
    monkeypatch.setenv("LEASE_SECONDS", "15")
    monkeypatch.setenv("READ_ONLY", "true")
    monkeypatch.setenv("LOG_LEVEL", "debug")

    settings = load_settings()

    assert (settings.STORAGE_BACKEND, settings.GCS_BUCKET) == ("gcp", "spotshift-data")
    assert (settings.LEASE_SECONDS, settings.READ_ONLY, settings.LOG_LEVEL) == (15, True, "DEBUG")


def test_blank_optional_values_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GCS_BUCKET", "")
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", "  ")

    settings = load_settings()

    assert settings.GCS_BUCKET is None and settings.AZURE_STORAGE_CONNECTION_STRING is None


@pytest.mark.parametrize(
    "value",
    [
        "changeme",
        "<connection-string>",
        "${AZURE_STORAGE_CONNECTION_STRING}",
        "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=<key>;EndpointSuffix=core.windows.net",
        "TODO",
    ],
)
def test_placeholder_connection_string_is_rejected_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", value)

    with pytest.raises(ConfigError) as raised:
        load_settings()

    message = str(raised.value)
    assert message.startswith("AZURE_STORAGE_CONNECTION_STRING: looks like a placeholder")
    assert value not in message


def test_real_connection_string_is_kept_secret() -> None:
    settings = Settings(AZURE_STORAGE_CONNECTION_STRING="UseDevelopmentStorage=true")

    assert isinstance(settings.AZURE_STORAGE_CONNECTION_STRING, SecretStr)
    assert "UseDevelopmentStorage" not in repr(settings)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LEASE_SECONDS", "soon"),
        ("LEASE_SECONDS", "0"),
        ("MAX_ATTEMPTS", "0"),
        ("STORAGE_BACKEND", "s3"),
        ("EVICTION_WATCH", "aws"),
        ("LOG_LEVEL", "chatty"),
    ],
)
def test_invalid_value_error_names_the_variable_on_one_line(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)

    with pytest.raises(ConfigError) as raised:
        load_settings()

    message = str(raised.value)
    assert message.startswith(f"{name}: ") and repr(value).lower() in message.lower()
    assert "\n" not in message


@pytest.mark.parametrize(
    ("command", "env", "expected"),
    [
        (["api"], {"STORAGE_BACKEND": "gcp"}, "GCS_BUCKET is required when STORAGE_BACKEND=gcp"),
        (["worker"], {"STORAGE_BACKEND": "azure"}, "AZURE_CONTAINER is required when STORAGE_BACKEND=azure"),
        (["worker", "--burst"], {"LEASE_SECONDS": "-1"}, "LEASE_SECONDS: Input should be greater than 0"),
        (["api"], {"AZURE_STORAGE_CONNECTION_STRING": "changeme"}, "AZURE_STORAGE_CONNECTION_STRING: looks like"),
    ],
    ids=["api-missing-bucket", "worker-missing-container", "bad-number", "placeholder-secret"],
)
def test_configuration_error_exits_2_with_one_clear_line(
    tmp_path: object, command: list[str], env: dict[str, str], expected: str
) -> None:
    result = subprocess.run(
        [*CLI, *command], env=subprocess_env(**env), cwd=str(tmp_path), capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"spotshift: configuration error: {expected}")
    assert "Traceback" not in result.stderr

"""Service settings: precedence, refusals, key hashing, and run()'s one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from serve.settings import ServiceSettings, SettingsError, hash_key, is_loopback, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "MODEL",
        "DB",
        "API_KEYS",
        "MAX_BODY_BYTES",
        "MAX_EVENTS_PER_REQUEST",
        "HOST",
        "PORT",
        "ALLOW_INSECURE",
        "LOG_LEVEL",
    ):
        monkeypatch.delenv(f"DISTILLWATCH_{name}", raising=False)


def test_defaults():
    s = load_settings()
    assert s.db == Path("distillwatch.sqlite3")
    assert s.max_body_bytes == 10 * 1024 * 1024
    assert s.max_events_per_request == 10_000
    assert s.host == "127.0.0.1" and s.model is None and not s.auth_required


def test_flags_win_over_env_which_win_over_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("DISTILLWATCH_PORT", "9001")
    monkeypatch.setenv("DISTILLWATCH_DB", str(tmp_path / "env.sqlite3"))
    monkeypatch.setenv("DISTILLWATCH_MAX_BODY_BYTES", "2048")
    s = load_settings(port=9002, db=None)
    assert s.port == 9002  # flag
    assert s.db == tmp_path / "env.sqlite3"  # env (the flag was not given)
    assert s.max_body_bytes == 2048
    assert s.max_events_per_request == 10_000  # default


def test_api_keys_from_env_are_split_and_hashed(monkeypatch):
    monkeypatch.setenv("DISTILLWATCH_API_KEYS", " key-one-0123456789 ,key-two-0123456789,")
    s = load_settings()
    assert set(s.api_keys) == {hash_key("key-one-0123456789"), hash_key("key-two-0123456789")}
    assert "key-one" not in repr(s)


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "example.com"])
def test_refuses_open_non_loopback_without_keys(host):
    with pytest.raises(SettingsError, match="without API keys"):
        load_settings(host=host)
    assert load_settings(host=host, api_keys="k-0123456789abcdef").host == host
    assert load_settings(host=host, allow_insecure=True).allow_insecure


@pytest.mark.parametrize("host", ["127.0.0.1", "127.5.5.5", "::1", "[::1]", "localhost"])
def test_loopback_hosts(host):
    assert is_loopback(host)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_body_bytes": 0},
        {"max_body_bytes": -5},
        {"max_body_bytes": 10**12},
        {"max_events_per_request": 0},
        {"port": 0},
        {"port": 70000},
        {"api_keys": "bad key with spaces"},
        {"db": "/nonexistent-dir/x/state.sqlite3"},
    ],
)
def test_refuses_nonsensical_values_with_one_line(kwargs):
    with pytest.raises(SettingsError) as info:
        load_settings(**kwargs)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("invalid service settings:")


def test_settings_are_frozen():
    s = ServiceSettings()
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen-instance error
        s.port = 1  # type: ignore[misc]


def test_serve_command_reports_bad_settings_in_one_line(monkeypatch, capsys):
    from distillwatch.cli import main

    rc = main(["serve", "--host", "0.0.0.0", "--port", "8123"])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "without API keys" in err


def test_serve_command_reports_a_missing_model_dir(tmp_path, capsys):
    from distillwatch.cli import main

    rc = main(["serve", "--model", str(tmp_path / "nope"), "--db", str(tmp_path / "s.sqlite3")])
    assert rc == 2
    assert "model directory not found" in capsys.readouterr().err


def test_embed_backend_from_env_is_checked(monkeypatch):
    monkeypatch.setenv("DISTILLWATCH_EMBED_BACKEND", "onnx-int8")
    assert load_settings().embed_backend == "onnx-int8"
    monkeypatch.setenv("DISTILLWATCH_EMBED_BACKEND", "fp8")
    with pytest.raises(SettingsError, match="embed_backend"):
        load_settings()

from __future__ import annotations

import pytest

from runtime._private.config import Config


def test_defaults_and_overrides(monkeypatch):
    monkeypatch.setenv("RUNTIME_LEASE_LINGER_S", "0.5")
    config = Config.load({"max_pending_lease_requests": 3})
    assert config.lease_linger_s == 0.5
    assert config.max_pending_lease_requests == 3
    assert config.gcs_port != 6379


def test_errors_name_the_option(monkeypatch):
    with pytest.raises(ValueError, match="bogus"):
        Config.load({"bogus": 1})
    with pytest.raises(TypeError, match="lease_linger_s"):
        Config.load({"lease_linger_s": "fast"})
    with pytest.raises(ValueError, match="'worker_template_timeout_s' must be 0 or more"):
        Config.load({"worker_template_timeout_s": -1})
    with pytest.raises(ValueError, match="'idle_worker_timeout_s' must be 0 or more"):
        Config.load({"idle_worker_timeout_s": float("nan")})
    with pytest.raises(ValueError, match="object_spilling_threshold"):
        Config.load({"object_spilling_threshold": 1.5})
    monkeypatch.setenv("RUNTIME_MAX_PENDING_LEASE_REQUESTS", "many")
    with pytest.raises(ValueError, match="RUNTIME_MAX_PENDING_LEASE_REQUESTS"):
        Config.load()


def test_round_trip_through_the_environment(monkeypatch):
    config = Config.load({"idle_worker_timeout_s": 2.5})
    for key, value in config.to_env().items():
        monkeypatch.setenv(key, value)
    assert Config.load() == config

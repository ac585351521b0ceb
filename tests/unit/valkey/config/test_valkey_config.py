"""IAMDB_VALKEY_*: what AWS's endpoint names tell, and a ConfigError naming the variable for every
mistake, before any network call."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iamdb._valkey.config import VALKEY_SUFFIXES, load_valkey_config
from iamdb.errors import ConfigError

BASE = {"AWS_REGION": "us-east-1", "IAMDB_VALKEY_USER": "app"}


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("master.my-cache.abc123.use1.cache.amazonaws.com",
         ("my-cache", "elasticache", False, False, "us-east-1")),
        ("replica.my-cache.abc123.use1.cache.amazonaws.com",
         ("my-cache", "elasticache", False, False, "us-east-1")),
        ("clustercfg.my-cache.abc123.use1.cache.amazonaws.com",
         ("my-cache", "elasticache", False, True, "us-east-1")),
        ("My-Cache-abc123.serverless.use1.cache.amazonaws.com",
         ("my-cache", "elasticache", True, True, "us-east-1")),
        ("clustercfg.my-cache.abc123.cnn1.cache.amazonaws.com.cn",
         ("my-cache", "elasticache", False, True, "us-east-1")),
        ("clustercfg.orders.abc123.memorydb.eu-west-1.amazonaws.com",
         ("orders", "memorydb", False, True, "eu-west-1")),
        ("orders-0001-001.orders.abc123.memorydb.eu-west-1.amazonaws.com",
         ("orders", "memorydb", False, True, "eu-west-1")),
    ],
)  # fmt: skip
def test_endpoint_names_tell_the_cache_service_mode_and_region(
    host: str, expected: tuple[Any, ...]
) -> None:
    cfg = load_valkey_config(None, {**BASE, "IAMDB_VALKEY_HOST": host})
    assert (cfg.cache_name, cfg.service, cfg.serverless, cfg.cluster, cfg.region) == expected
    assert cfg.target.lifetime == 900 and cfg.action == f"{cfg.service}:Connect"


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "cache.internal.example", "my-cache-001.abc123.0001.use1.cache.amazonaws.com"],
)
def test_a_host_that_does_not_carry_the_name_needs_cache_name(host: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_valkey_config(None, {**BASE, "IAMDB_VALKEY_HOST": host})
    assert caught.value.variable == "IAMDB_VALKEY_CACHE_NAME"
    cfg = load_valkey_config(
        None, {**BASE, "IAMDB_VALKEY_HOST": host, "IAMDB_VALKEY_CACHE_NAME": "sessions"}
    )
    assert (cfg.cache_name, cfg.cluster, cfg.serverless) == ("sessions", False, False)


def test_settings_override_what_the_name_says() -> None:
    env = {
        **BASE,
        "IAMDB_VALKEY_HOST": "master.my-cache.abc123.use1.cache.amazonaws.com",
        "IAMDB_VALKEY_CLUSTER": "TRUE",
        "IAMDB_VALKEY_REGION": "eu-west-3",
        "IAMDB_VALKEY_REAUTH_SECONDS": "60",
    }
    cfg = load_valkey_config(None, env)
    assert (cfg.cluster, cfg.region, cfg.reauth_seconds) == (True, "eu-west-3", 60.0)


def test_named_instances_read_their_own_variables() -> None:
    env = {
        **BASE,
        "IAMDB_VALKEY_SESSIONS_HOST": "master.sessions.abc123.use1.cache.amazonaws.com",
        "IAMDB_VALKEY_SESSIONS_USER": "web",
    }
    cfg = load_valkey_config("Sessions", env)
    assert (cfg.name, cfg.label, cfg.user, cfg.prefix) == (
        "sessions",
        "valkey:sessions",
        "web",
        "IAMDB_VALKEY_SESSIONS_",
    )


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("IAMDB_VALKEY_HOST", ""),
        ("IAMDB_VALKEY_HOST", "bad host"),
        ("IAMDB_VALKEY_PORT", "0"),
        ("IAMDB_VALKEY_PORT", "6379x"),
        ("IAMDB_VALKEY_USER", ""),
        ("IAMDB_VALKEY_USER", "has space"),
        ("IAMDB_VALKEY_CACHE_NAME", "a/b"),
        ("IAMDB_VALKEY_SERVICE", "rds"),
        ("IAMDB_VALKEY_SERVERLESS", "yes"),
        ("IAMDB_VALKEY_CLUSTER", "1"),
        ("IAMDB_VALKEY_REGION", "US-EAST-1"),
        ("IAMDB_VALKEY_SSLROOTCERT", "/nonexistent/ca.pem"),
        ("IAMDB_VALKEY_SSLROOTCERT", "/dev/zero"),
        ("IAMDB_VALKEY_CONNECT_TIMEOUT", "0"),
        ("IAMDB_VALKEY_REAUTH_SECONDS", "43200"),  # AWS closes at 12 h: re-authenticate before
        ("IAMDB_VALKEY_REAUTH_SECONDS", "nan"),
    ],
)
def test_each_mistake_names_its_variable(var: str, value: str) -> None:
    env = {**BASE, "IAMDB_VALKEY_HOST": "master.c.abc123.use1.cache.amazonaws.com", var: value}
    with pytest.raises(ConfigError) as caught:
        load_valkey_config(None, env)
    assert caught.value.variable == var


def test_memorydb_has_no_serverless_caches() -> None:
    env = {
        **BASE,
        "IAMDB_VALKEY_HOST": "clustercfg.orders.abc123.memorydb.eu-west-1.amazonaws.com",
        "IAMDB_VALKEY_SERVERLESS": "true",
    }
    with pytest.raises(ConfigError) as caught:
        load_valkey_config(None, env)
    assert caught.value.variable == "IAMDB_VALKEY_SERVERLESS"


def test_without_a_region_the_region_variable_is_named() -> None:
    env = {"IAMDB_VALKEY_USER": "app", "IAMDB_VALKEY_HOST": "master.c.a.use1.cache.amazonaws.com"}
    with pytest.raises(ConfigError) as caught:
        load_valkey_config(None, env)
    assert caught.value.variable == "IAMDB_VALKEY_REGION"


hostile = st.one_of(
    st.sampled_from(["", " ", "\x00", "-1", "1e9", "9" * 50, "true\n", "../../etc/passwd"]),
    st.text(max_size=300),
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(VALKEY_SUFFIXES), hostile)
def test_a_hostile_value_is_a_config_error_naming_it_or_a_valid_config(
    suffix: str, value: str
) -> None:
    var = "IAMDB_VALKEY_" + suffix
    env = {**BASE, "IAMDB_VALKEY_HOST": "master.c.abc123.use1.cache.amazonaws.com", var: value}
    real_socket, real_resolve = socket.socket, socket.getaddrinfo
    socket.socket = socket.getaddrinfo = None  # type: ignore[assignment,misc]
    try:
        cfg = load_valkey_config(None, env)
    except ConfigError as exc:
        assert exc.variable in (var, "IAMDB_VALKEY_CACHE_NAME")
        return
    finally:
        socket.socket, socket.getaddrinfo = real_socket, real_resolve  # type: ignore[misc]
    assert 1 <= cfg.port <= 65535 and cfg.user.isprintable() and cfg.cache_name
    assert 1 <= cfg.reauth_seconds < 43_200 and cfg.service in ("elasticache", "memorydb")

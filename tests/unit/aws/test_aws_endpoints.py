"""``resolve_endpoint`` against boto3's own resolution, and the configuration it refuses.

For every case boto3 creates a client with the same region and the same environment
(``AWS_ENDPOINT_URL*``, ``AWS_IGNORE_CONFIGURED_ENDPOINT_URLS``, ``AWS_USE_FIPS_ENDPOINT`` are
read by boto3 from the process environment) and its ``meta.endpoint_url`` is compared with
iamdb's endpoint: scheme, host (lower case) and port, the default port made explicit. boto3
keeps a configured URL's spelling (case, ``:443``, a trailing ``/``); what is compared is
where the requests go.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest

from iamdb._aws import AwsClient, AwsEndpoint, resolve_endpoint
from iamdb._credentials import CredentialResolver
from iamdb._env import aws_region
from iamdb._runtime import Runtime
from iamdb.errors import ConfigError
from tests.localserver import LocalServer, answering, response

REGIONS = [
    # aws
    "us-east-1",
    "us-west-2",
    "eu-west-3",
    "ap-southeast-5",
    "il-central-1",
    "mx-central-1",
    "ca-west-1",
    # aws-cn
    "cn-north-1",
    "cn-northwest-1",
    # aws-us-gov
    "us-gov-west-1",
    "us-gov-east-1",
    # aws-iso, aws-iso-b, aws-iso-e, aws-iso-f
    "us-iso-east-1",
    "us-iso-west-1",
    "us-isob-east-1",
    "eu-isoe-west-1",
    "us-isof-south-1",
    "us-isof-east-1",
    # aws-eusc
    "eusc-de-east-1",
]
SERVICES = ["dynamodb", "sts"]
_VARIABLES = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_DYNAMODB",
    "AWS_ENDPOINT_URL_STS",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "AWS_USE_FIPS_ENDPOINT",
    "AWS_USE_DUALSTACK_ENDPOINT",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_STS_REGIONAL_ENDPOINTS",
)


def _where(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url.strip())
    default = 443 if parts.scheme == "https" else 80
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


def _ours(endpoint: AwsEndpoint) -> tuple[str, str, int]:
    return endpoint.scheme, endpoint.host.strip("[]"), endpoint.port


def boto3_endpoint(
    monkeypatch: pytest.MonkeyPatch, service: str, region: str, env: dict[str, str]
) -> tuple[str, str, int]:
    for name in _VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")  # no profile settings
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    client = _session().client(service, region_name=region)
    return _where(client.meta.endpoint_url)


@functools.lru_cache(maxsize=1)
def _session() -> Any:
    """One boto3 session (its loaders are costly); it reads the environment per client."""
    return boto3.session.Session(aws_access_key_id="AKID", aws_secret_access_key="secret")


@pytest.mark.parametrize("fips", [None, "true", "false"])
@pytest.mark.parametrize("region", REGIONS)
def test_regional_endpoints_equal_boto3(
    monkeypatch: pytest.MonkeyPatch, region: str, fips: str | None
) -> None:
    env = {} if fips is None else {"AWS_USE_FIPS_ENDPOINT": fips}
    for service in SERVICES:
        expected = boto3_endpoint(monkeypatch, service, region, env)
        endpoint = resolve_endpoint(service, {"AWS_REGION": region, **env})
        assert _ours(endpoint) == expected, service
        assert endpoint.region == region


_URLS = [
    "http://localhost:8000",
    "http://localhost:8000/",
    "https://Example.COM",
    "https://example.com:443",
    "http://example.com:80",
    "https://example.com:8443",
    "http://127.0.0.1:4566",
    "http://10.0.0.1",
    "http://[::1]:8000",
    "http://[FD00:EC2::23]",
    "https://dynamodb.us-east-1.amazonaws.com",
]
_CONFIGURED: list[dict[str, str]] = [
    *({"AWS_ENDPOINT_URL": url} for url in _URLS),
    *({"AWS_ENDPOINT_URL_DYNAMODB": url} for url in _URLS),
    *({"AWS_ENDPOINT_URL_STS": url} for url in _URLS),
    {"AWS_ENDPOINT_URL": "http://all:1", "AWS_ENDPOINT_URL_DYNAMODB": "http://dynamodb:2"},
    {"AWS_ENDPOINT_URL": "http://all:1", "AWS_ENDPOINT_URL_STS": "http://sts:3"},
    {"AWS_ENDPOINT_URL": "http://all:1", "AWS_ENDPOINT_URL_DYNAMODB": ""},
    {"AWS_ENDPOINT_URL": ""},
    {"AWS_ENDPOINT_URL": "http://all:1", "AWS_USE_FIPS_ENDPOINT": "true"},
]
_IGNORE = [None, "true", "false"]


@pytest.mark.parametrize(
    ("configured", "ignore"),
    list(itertools.product(_CONFIGURED, _IGNORE)),
    ids=lambda v: "-" if v is None else str(v),
)
def test_configured_endpoint_urls_equal_boto3(
    monkeypatch: pytest.MonkeyPatch, configured: dict[str, str], ignore: str | None
) -> None:
    env = dict(configured)
    if ignore is not None:
        env["AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"] = ignore
    for service in SERVICES:
        expected = boto3_endpoint(monkeypatch, service, "eu-central-1", env)
        endpoint = resolve_endpoint(service, {"AWS_REGION": "eu-central-1", **env})
        assert _ours(endpoint) == expected, service
        assert endpoint.region == "eu-central-1"  # a configured URL is still signed for it


@pytest.mark.parametrize("value", ["TRUE", "True", "1", "yes", "on", " true", "true ", ""])
def test_boolean_settings_are_read_as_boto3_reads_them(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """botocore accepts only ``true`` in any case: ``1``, ``yes`` or padding mean false."""
    for env in (
        {"AWS_USE_FIPS_ENDPOINT": value},
        {"AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": value, "AWS_ENDPOINT_URL": "http://local:1"},
    ):
        for service in SERVICES:
            expected = boto3_endpoint(monkeypatch, service, "us-west-2", env)
            assert _ours(resolve_endpoint(service, {"AWS_REGION": "us-west-2", **env})) == (
                expected
            ), (service, env)


def test_host_header_drops_only_the_default_port() -> None:
    def host(url: str) -> str:
        return resolve_endpoint(
            "sts", {"AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": url}
        ).host_header

    assert host("https://example.com:443") == "example.com"
    assert host("http://example.com:80") == "example.com"
    assert host("https://example.com:80") == "example.com:80"
    assert host("http://example.com:443") == "example.com:443"
    assert host("http://[::1]:8000") == "[::1]:8000"


def test_aws_region_is_preferred_to_aws_default_region() -> None:
    assert aws_region({"AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "us-east-1"}) == (
        "eu-west-1"
    )
    assert aws_region({"AWS_DEFAULT_REGION": "us-east-1"}) == "us-east-1"
    assert aws_region({"AWS_REGION": "", "AWS_DEFAULT_REGION": "us-east-1"}) == "us-east-1"


# --- refused configuration -----------------------------------------------------------------

BAD_REGIONS = [
    "us-east-\u0661",  # ARABIC-INDIC DIGIT ONE
    "us-east-\uff11",  # FULLWIDTH DIGIT ONE
    "us-e\uff41st-1",  # FULLWIDTH SMALL A
    "us-east-1.evil.example",
    "us-east-1/",
    "evil.example/us-east-1",
    "us east 1",
    "US-EAST-1",
    "us_east_1",
    "useast1",
    "-us-east-1",
    "us-east-123",
    "x" * 200,
    "us-east-1\x00",
    "us-east-1:443",
    "us-east-1@x",
]


@pytest.mark.parametrize("region", BAD_REGIONS)
@pytest.mark.parametrize("variable", ["AWS_REGION", "AWS_DEFAULT_REGION"])
def test_malformed_region_is_a_config_error_naming_the_variable(region: str, variable: str) -> None:
    for service in SERVICES:
        with pytest.raises(ConfigError) as info:
            resolve_endpoint(service, {variable: region})
        assert info.value.variable == variable


def test_missing_region_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        resolve_endpoint("dynamodb", {"AWS_ENDPOINT_URL": "http://localhost:8000"})
    assert info.value.variable == "AWS_REGION"


BAD_URLS = [
    "localhost:8000",  # no scheme
    "//localhost:8000",
    "ftp://localhost",
    "file:///etc/passwd",
    "http://",
    "http://:8000",
    "http://localhost:0",
    "http://localhost:99999",
    "http://localhost:-1",
    "http://localhost:80a",
    "http://localhost:\u0668\u0660",  # Arabic-Indic digits as the port
    "http://user:secret@localhost:8000",
    "http://localhost:8000/prefix",
    "http://localhost:8000?x=1",
    "http://localhost:8000#frag",
    "http://exa mple.com",
    "http://\uff45xample.com",  # FULLWIDTH SMALL E
    "http://bücher.example",
    "http://[::1",
    "http://[not-ipv6]:80",
    "http://local_host:8000",
    "http://localhost:8000\r\nX-Injected: 1",
    "http://localhost\x00:8000",
]


@pytest.mark.parametrize("url", BAD_URLS)
@pytest.mark.parametrize(
    ("variable", "service"),
    [
        ("AWS_ENDPOINT_URL", "dynamodb"),
        ("AWS_ENDPOINT_URL", "sts"),
        ("AWS_ENDPOINT_URL_DYNAMODB", "dynamodb"),
        ("AWS_ENDPOINT_URL_STS", "sts"),
    ],
)
def test_malformed_endpoint_url_is_a_config_error_naming_the_variable(
    url: str, variable: str, service: str
) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_endpoint(service, {"AWS_REGION": "us-east-1", variable: url})
    assert info.value.variable == variable


def test_a_userinfo_password_is_not_repeated_in_the_message() -> None:
    url = "http://user:hunter2-secret@localhost:8000"
    with pytest.raises(ConfigError) as info:
        resolve_endpoint("sts", {"AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL_STS": url})
    assert info.value.variable == "AWS_ENDPOINT_URL_STS"
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("env", "variable", "service"),
    [
        ({"AWS_REGION": "us-east-\u0661"}, "AWS_REGION", "dynamodb"),
        ({"AWS_REGION": "us-east-\u0661"}, "AWS_REGION", "sts"),
        ({"AWS_ENDPOINT_URL_DYNAMODB": "http://x:0"}, "AWS_ENDPOINT_URL_DYNAMODB", "dynamodb"),
        ({"AWS_ENDPOINT_URL_STS": "http://x/p"}, "AWS_ENDPOINT_URL_STS", "sts"),
    ],
)
def test_config_errors_come_before_any_call(
    env: dict[str, str], variable: str, service: str
) -> None:
    with LocalServer(answering(lambda _: response(200, b"{}"))) as server:
        env = {
            "AWS_ACCESS_KEY_ID": "AKID",
            "AWS_SECRET_ACCESS_KEY": "secret",
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": server.url,  # where a call would go if one were made
            **env,
        }
        runtime = Runtime(environ=env)
        client = AwsClient(runtime, CredentialResolver(Runtime(environ=env)))
        deadline = runtime.clock() + 5
        calls: list[Callable[[], Any]] = [lambda: client.warm(service, deadline)]
        if service == "dynamodb":
            calls.append(lambda: client.dynamodb("UpdateItem", {}, deadline))
            calls.append(lambda: client.dynamodb_send("UpdateItem", {}, deadline))
        else:
            calls.append(lambda: client.sts({"Action": "AssumeRole"}, deadline))
        for call in calls:
            with pytest.raises(ConfigError) as info:
                call()
            assert info.value.variable == variable
        client.close()
    assert server.accepted == 0

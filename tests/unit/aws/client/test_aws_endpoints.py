"""``resolve_endpoint`` against boto3's own resolution, and the configuration it refuses.

Regional endpoints: for every region of botocore's partitions and every combination of
``AWS_USE_FIPS_ENDPOINT`` and ``AWS_USE_DUALSTACK_ENDPOINT``, the endpoint botocore's endpoint
rules give a request (the oracle), or a ConfigError exactly where they give none.

Configured URLs: boto3 creates a client with the same region and the same environment
(``AWS_ENDPOINT_URL*``, ``AWS_IGNORE_CONFIGURED_ENDPOINT_URLS``... are read by boto3 from the
process environment) and its ``meta.endpoint_url`` is compared with iamdb's endpoint: scheme,
host (lower case) and port, the default port made explicit. boto3 keeps a configured URL's
spelling (case, ``:443``, a trailing ``/``); what is compared is where the requests go.
"""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import boto3
import botocore.loaders
import botocore.session
import pytest
from botocore.config import Config
from botocore.exceptions import EndpointResolutionError, EndpointVariantError

from iamdb._aws.chain import CredentialResolver
from iamdb._aws.client import AwsClient, AwsEndpoint, resolve_endpoint
from iamdb._core.env import aws_region
from iamdb._core.runtime import Runtime
from iamdb.errors import ConfigError
from tests.localserver import LocalServer, answering, response

SERVICES = ["dynamodb", "sts"]
_VARIABLES = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_DYNAMODB",
    "AWS_ENDPOINT_URL_STS",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "AWS_USE_FIPS_ENDPOINT",
    "AWS_USE_DUALSTACK_ENDPOINT",
    "AWS_ACCOUNT_ID",
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


def _partition_regions() -> list[str]:
    """Every region botocore's partitions.json names, but the ``<partition>-global`` pseudo
    regions (below), and one region per partition that its pattern alone places there."""
    data = botocore.loaders.create_loader().load_data("partitions")
    listed = {r for partition in data["partitions"] for r in partition["regions"]}
    patterned = [
        "us-west-9",
        "cn-south-7",
        "us-gov-north-3",
        "us-iso-north-9",
        "us-isob-north-9",
        "eu-isoe-north-9",
        "us-isof-north-9",
        "eusc-de-west-2",
        "xx-east-1",
    ]
    return sorted(r for r in listed if not r.endswith("-global")) + patterned


def botocore_endpoint(
    service: str, region: str, fips: bool, dualstack: bool
) -> tuple[str, str, int, str] | None:
    """Where botocore's endpoint rules send a request (scheme, host, port, signing region);
    None where botocore has no endpoint: creating the client refuses the variant (dual-stack
    where endpoints.json has none), or the rules have none. The rules' endpoint, not
    ``meta.endpoint_url``: that one comes from endpoints.json and differs (FIPS DynamoDB in
    GovCloud); requests go where the rules say."""
    try:
        client = _botocore_session().create_client(
            service,
            region_name=region,
            aws_access_key_id="AKID",
            aws_secret_access_key="secret",
            config=Config(use_fips_endpoint=fips, use_dualstack_endpoint=dualstack),
        )
    except EndpointVariantError:
        return None
    operation = client.meta.service_model.operation_model(
        "UpdateItem" if service == "dynamodb" else "AssumeRole"
    )
    try:
        found = client._ruleset_resolver.construct_endpoint(
            operation_model=operation, call_args={}, request_context={}
        )
    except EndpointResolutionError:
        return None
    schemes = found.properties.get("authSchemes") or [{}]
    return (*_where(found.url), schemes[0].get("signingRegion", region))


@functools.lru_cache(maxsize=1)
def _botocore_session() -> Any:
    return botocore.session.get_session()


@pytest.fixture
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No AWS setting of the test process reaches botocore (profiles, account id, flags)."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")


@pytest.mark.usefixtures("clean_environ")
@pytest.mark.parametrize("region", _partition_regions())
def test_regional_endpoints_equal_botocores_rules(region: str) -> None:
    """For each FIPS and dual-stack combination: botocore's endpoint, or a ConfigError where
    botocore's rules have none."""
    for service, fips, dualstack in itertools.product(SERVICES, (False, True), (False, True)):
        env = {"AWS_REGION": region}
        env.update({"AWS_USE_FIPS_ENDPOINT": "true"} if fips else {})
        env.update({"AWS_USE_DUALSTACK_ENDPOINT": "true"} if dualstack else {})
        expected = botocore_endpoint(service, region, fips, dualstack)
        case = (service, fips, dualstack)
        if expected is None:
            with pytest.raises(ConfigError):
                resolve_endpoint(service, env)
            continue
        endpoint = resolve_endpoint(service, env)
        assert (*_ours(endpoint), endpoint.region) == expected, case


@pytest.mark.parametrize("region", ["aws-global", "aws-us-gov-global", "aws-cn-global", "local"])
def test_pseudo_regions_are_refused(region: str) -> None:
    """botocore knows ``aws-global`` (STS's global endpoint) and DynamoDB's ``local``; no
    Lambda function runs there, and iamdb's region check refuses them by name rather than
    guess."""
    for service in SERVICES:
        with pytest.raises(ConfigError) as info:
            resolve_endpoint(service, {"AWS_REGION": region})
        assert info.value.variable == "AWS_REGION"


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
    {"AWS_ENDPOINT_URL": "http://all:1", "AWS_USE_DUALSTACK_ENDPOINT": "true"},
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
        {"AWS_USE_DUALSTACK_ENDPOINT": value},
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

"""Amazon DocumentDB endpoints in IAMDB_MONGO_URI: recognised, given the RDS CA bundle and
no retryable writes unless the URI says otherwise, and refused where the bundle cannot help.

pymongo is the oracle for what a client makes of iamdb's options (a client never connected);
OpenSSL (through ``ssl``) reads the subjects of the bundled certificates.
"""

from __future__ import annotations

import os
import re
import shutil
import ssl
import urllib.parse
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient, uri_parser

from iamdb._aws.credentials import Credentials
from iamdb._aws.sts import Lease
from iamdb._core.env import RDS_CA_BUNDLE
from iamdb._mongo.admin import connection_string
from iamdb._mongo.client import client_options
from iamdb._mongo.config import MongoConfig, load_mongo_config
from iamdb._mongo.documentdb import RDS_BUNDLE_REGIONS, documentdb_region
from iamdb._mongo.uri import parse_uri
from iamdb.errors import ConfigError

pytestmark = pytest.mark.filterwarnings(
    "ignore:You appear to be connected to a DocumentDB cluster:UserWarning"
)
CLUSTER = "orders.cluster-c1abc2def3gh.eu-west-1.docdb.amazonaws.com"
CREDS = Credentials("ASIAROLEKEY", "role-secret", "role-token")
# Where DocumentDB runs, from AWS's DocumentDB developer guide (regions and availability zones),
# as read in December 2026.
DOCUMENTDB_REGIONS = {
    "us-east-1", "us-east-2", "us-west-2", "af-south-1", "sa-east-1", "ap-east-1", "ap-south-1",
    "ap-south-2", "ap-southeast-1", "ap-southeast-2", "ap-southeast-3", "ap-southeast-5",
    "ap-southeast-7", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3", "ca-central-1",
    "cn-north-1", "cn-northwest-1", "eu-central-1", "eu-west-1", "eu-west-2", "eu-west-3",
    "eu-south-1", "eu-south-2", "eu-north-1", "mx-central-1", "me-central-1", "il-central-1",
    "us-gov-west-1", "us-gov-east-1",
}  # fmt: skip
_G1_ROOT = re.compile(
    r"Amazon RDS ([a-z]{2}(?:-[a-z]+)+-[0-9]+) Root CA (RSA2048|RSA4096|ECC384) G1"
)


def cfg(uri: str) -> MongoConfig:
    return load_mongo_config(None, {"IAMDB_MONGO_URI": uri})


def client(c: MongoConfig) -> MongoClient[Any]:
    return MongoClient(
        c.uri, connect=False, **client_options(replace(c, client_name="orders-api"), CREDS)
    )


def bundle_roots() -> dict[str, set[str]]:
    """Region -> key types of the RDS G1 root CAs the bundled file holds."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(RDS_CA_BUNDLE)
    roots: dict[str, set[str]] = {}
    for cert in context.get_ca_certs():
        for rdn in cert["subject"]:
            for key, value in rdn:
                match = _G1_ROOT.fullmatch(value) if key == "commonName" else None
                if match:
                    roots.setdefault(match[1], set()).add(match[2])
    return roots


# -- which hosts are DocumentDB ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "region"),
    [
        (CLUSTER, "eu-west-1"),
        ("orders.cluster-ro-c1abc2def3gh.eu-west-1.docdb.amazonaws.com", "eu-west-1"),
        ("orders-2.c1abc2def3gh.us-east-1.docdb.amazonaws.com", "us-east-1"),  # an instance
        ("Orders.Cluster-C1ABC.US-EAST-2.DOCDB.AMAZONAWS.COM.", "us-east-2"),
        ("orders.cluster-c1abc.us-gov-west-1.docdb.amazonaws.com", "us-gov-west-1"),
        ("orders.cluster-c1abc.docdb.cn-north-1.amazonaws.com.cn", "cn-north-1"),
        ("orders.c1abc.docdb.cn-northwest-1.amazonaws.com.cn", "cn-northwest-1"),
        ("orders-c1abc.eu-west-1.docdb-elastic.amazonaws.com", None),  # Elastic: no IAM login
        ("orders.c1abc.eu-west-1.rds.amazonaws.com", None),
        ("orders.cluster-c1abc.eu-west-1.docdb.amazonaws.com.example.com", None),
        ("cluster-c1abc.eu-west-1.docdb.amazonaws.com", None),
        ("a.orders.cluster-c1abc.eu-west-1.docdb.amazonaws.com", None),
        ("orders.cluster-c1abc.cn-north-1.docdb.amazonaws.com.cn", None),  # not China's order
        ("db.example.com", None),
    ],
)
def test_documentdb_endpoint_names(host: str, region: str | None) -> None:
    assert documentdb_region(host) == region


# -- the CA bundle --------------------------------------------------------------------------------


def test_bundle_regions_are_the_g1_roots_the_bundle_holds() -> None:
    roots = bundle_roots()
    assert set(roots) == RDS_BUNDLE_REGIONS
    assert all(kinds == {"RSA2048", "RSA4096", "ECC384"} for kinds in roots.values())


def test_documentdb_regions_the_bundle_lacks() -> None:
    """What a refresh of the bundle should fix: these regions need tlsCAFile until then."""
    assert sorted(DOCUMENTDB_REGIONS - RDS_BUNDLE_REGIONS) == [
        "ap-southeast-5",
        "ap-southeast-7",
        "cn-north-1",
        "cn-northwest-1",
        "il-central-1",
        "mx-central-1",
        "us-gov-east-1",
        "us-gov-west-1",
    ]


def test_a_documentdb_client_trusts_the_rds_bundle_and_makes_no_retryable_writes() -> None:
    c = cfg(f"mongodb://{CLUSTER}:27017/app?replicaSet=rs0&readPreference=secondaryPreferred")
    assert c.documentdb
    kwargs = client_options(replace(c, client_name="orders-api"), CREDS)
    assert (kwargs["tlsCAFile"], kwargs["retryWrites"]) == (RDS_CA_BUNDLE, False)
    made = client(c)
    try:
        context = made.options.pool_options._ssl_context
        assert isinstance(context, ssl.SSLContext)
        bundled = Path(RDS_CA_BUNDLE).read_text().count("BEGIN CERTIFICATE")
        assert context.cert_store_stats()["x509_ca"] == bundled  # the bundle, nothing else
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
        assert made.options.retry_writes is False
    finally:
        made.close()


def test_the_uri_overrides_the_documentdb_defaults(tmp_path: Path) -> None:
    ca = tmp_path / "global-bundle.pem"  # the name AWS's download has
    shutil.copy(RDS_CA_BUNDLE, ca)
    ca.write_text(
        ca.read_text().split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
    )
    c = cfg(f"mongodb://{CLUSTER}/app?tlsCAFile={ca}&RetryWrites=true")
    kwargs = client_options(c, CREDS)
    assert "tlsCAFile" not in kwargs and "retryWrites" not in kwargs
    made = client(c)
    try:
        assert made.options.pool_options._ssl_context.cert_store_stats()["x509_ca"] == 1
        assert made.options.retry_writes is True
    finally:
        made.close()


def test_other_hosts_keep_the_system_store_and_pymongo_defaults() -> None:
    kwargs = client_options(cfg("mongodb://cluster0.ab1cd.mongodb.net/app"), CREDS)
    assert "tlsCAFile" not in kwargs and "retryWrites" not in kwargs


def test_what_aws_gives_for_documentdb_is_accepted_as_it_is() -> None:
    """The console's connection string with IAM's options, and the tunnel's direct form."""
    ca = urllib.parse.quote(RDS_CA_BUNDLE, safe="/")
    for query in (
        f"tls=true&tlsCAFile={ca}&replicaSet=rs0&readPreference=secondaryPreferred"
        "&retryWrites=false&authSource=%24external&authMechanism=MONGODB-AWS",
        "directConnection=true&serverSelectionTimeoutMS=2000",
    ):
        c = cfg(f"mongodb://{CLUSTER}:27017/app?{query}")
        assert c.documentdb and c.tls
        client(c).close()


@pytest.mark.parametrize(
    ("uri", "fragment"),
    [
        ("mongodb://orders.cluster-c1.il-central-1.docdb.amazonaws.com/app", "CA of il-central-1"),
        ("mongodb://o.cluster-c1.docdb.cn-north-1.amazonaws.com.cn/app", "CA of cn-north-1"),
        ("mongodb://o.cluster-c1.us-gov-east-1.docdb.amazonaws.com/app", "tlsCAFile=<path>"),
        (f"mongodb://{CLUSTER},db.example.com/app", "mixes Amazon DocumentDB endpoints"),
        (f"mongodb://{CLUSTER}/app?tls=false", "plaintext is allowed to a single loopback"),
        (f"mongodb://{CLUSTER}/app?tlsAllowInvalidHostnames=true", "host-name verification"),
    ],
)
def test_refused_before_any_network_call(uri: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        cfg(uri)
    assert info.value.variable == "IAMDB_MONGO_URI" and fragment in str(info.value)


def test_a_region_the_bundle_lacks_is_fine_with_its_own_ca() -> None:
    host = "orders.cluster-c1.il-central-1.docdb.amazonaws.com"
    c = cfg(f"mongodb://{host}/app?tlsCAFile={urllib.parse.quote(RDS_CA_BUNDLE, safe='/')}")
    assert c.documentdb and "tlsCAFile" not in client_options(c, CREDS)


def test_srv_names_under_documentdb_get_the_same_defaults() -> None:
    c = cfg(f"mongodb+srv://{CLUSTER}/app")
    assert c.srv and c.documentdb
    assert client_options(c, CREDS)["retryWrites"] is False


# -- the admin helpers' connection string -----------------------------------------------------


def test_connection_string_carries_the_ca_and_no_retryable_writes() -> None:
    c = cfg(f"mongodb://{CLUSTER}:27017/app?replicaSet=rs0")
    uri = connection_string(c, Lease(CREDS, 0.0, "arn:aws:iam::123456789012:role/MongoAccess"))
    options = uri_parser.parse_uri(uri)["options"]
    assert options["tlsCAFile"] == RDS_CA_BUNDLE and options["retryWrites"] is False
    assert options["tls"] is True and options["replicaSet"] == "rs0"


def test_connection_string_keeps_the_uris_own_choice() -> None:
    c = cfg(f"mongodb://{CLUSTER}:27017/app?retryWrites=true")
    uri = connection_string(c, Lease(CREDS, 0.0, "the execution role"))
    assert uri.lower().count("retrywrites") == 1
    assert uri_parser.parse_uri(uri)["options"]["retryWrites"] is True


@pytest.mark.parametrize("option", ["tlsCAFile", "tlsCertificateKeyFile", "tlsCRLFile"])
def test_a_fifo_named_by_the_uri_is_refused_before_pymongo_opens_it(
    tmp_path: Path, option: str
) -> None:
    """pymongo's parser opens these files itself: a FIFO would hang get_mongo()."""
    fifo = tmp_path / "file.pem"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match=r"not a regular file \(a FIFO\)") as info:
        parse_uri("IAMDB_MONGO_URI", f"mongodb://db.example.com/app?{option}={fifo}")
    assert info.value.variable == "IAMDB_MONGO_URI"

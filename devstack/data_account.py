"""devstack's second AWS account: a central data account whose databases a function in the first
account reaches by assuming one of its roles, as on AWS.

RDS and Aurora DSQL check an IAM login against the database's own account: the token must be
signed by a principal of that account whose policies allow ``rds-db:connect`` (``dsql:DbConnect``)
on the database. A function in another account signs with a role it assumes there, which needs
two policies: the role's trust policy (in the data account) admitting the function's execution
role, and the execution role's ``sts:AssumeRole`` on the role. Account :data:`DATA_ACCOUNT` holds:

- the roles (:func:`create`): :data:`DATA_ROLE_ARN` (trusts the function, may connect),
  :data:`TENANT_ROLE_ARN` (the same, with an ``sts:ExternalId`` condition),
  :data:`NOCONNECT_ROLE_ARN` (trusts the function, no database permission) and
  :data:`UNTRUSTED_ROLE_ARN` (trusts someone else);
- two Aurora-like clusters (PostgreSQL and MariaDB, :mod:`devstack.cluster`) and an Aurora DSQL
  cluster, whose logins :class:`RolePolicies` judges against the role's policies in moto.

moto needs two corrections to behave as AWS here (:func:`cross_account_trust`): it looks a role
up in the caller's account, so another account's trust policy was never checked, and it compares
trust principals as plain strings (``arn:aws:iam::<account>:role/<name>`` did not admit that
role's sessions, and a principal string matched as a substring).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from devstack.verifier import iam_identity, principal_account

DATA_ACCOUNT = "210987654321"
PARTITION = "aws"
REGION = "us-east-1"


def _role(name: str) -> str:
    return f"arn:{PARTITION}:iam::{DATA_ACCOUNT}:role/{name}"


DATA_ROLE_ARN = _role("iamdb-data-access")
TENANT_ROLE_ARN = _role("iamdb-data-tenant")
TENANT_EXTERNAL_ID = "iamdb-tenant-7"
NOCONNECT_ROLE_ARN = _role("iamdb-data-noconnect")
UNTRUSTED_ROLE_ARN = _role("iamdb-data-untrusted")
ROLE_PATTERN = _role("iamdb-data-*")  # what the function's policy may assume

# The data account's databases: (verifier server names, the resource their policy names).
AURORA_PG_RESOURCE_ID = "cluster-IAMDBDATAAURORAPG000000000"
AURORA_MYSQL_RESOURCE_ID = "cluster-IAMDBDATAAURORAMYSQL000000"
DSQL_CLUSTER_ID = "iamdbdata00000000000000000"  # 26 of [a-z0-9], as DSQL's cluster ids
DSQL_ENDPOINT = f"{DSQL_CLUSTER_ID}.dsql.{REGION}.on.aws"
DSQL_SERVER = "data-dsql"


def dbuser_arn(resource_id: str, user: str) -> str:
    return f"arn:{PARTITION}:rds-db:{REGION}:{DATA_ACCOUNT}:dbuser:{resource_id}/{user}"


DSQL_CLUSTER_ARN = f"arn:{PARTITION}:dsql:{REGION}:{DATA_ACCOUNT}:cluster/{DSQL_CLUSTER_ID}"
CONNECT_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": "rds-db:connect",
            "Resource": [
                dbuser_arn(AURORA_PG_RESOURCE_ID, "iamdb_app"),
                dbuser_arn(AURORA_MYSQL_RESOURCE_ID, "iamdb_app"),
            ],
        },
        {
            "Effect": "Allow",
            "Action": ["dsql:DbConnect", "dsql:DbConnectAdmin"],
            "Resource": DSQL_CLUSTER_ARN,
        },
    ],
}
# A role that may do something, but not log in to these databases.
NOCONNECT_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "sts:GetCallerIdentity", "Resource": "*"}],
}


def trust(*principals: str, external_id: str | None = None) -> dict[str, Any]:
    """A trust policy admitting ``principals`` (role ARNs admit their sessions, as on AWS)."""
    statement: dict[str, Any] = {
        "Effect": "Allow",
        "Principal": {"AWS": list(principals)},
        "Action": "sts:AssumeRole",
    }
    if external_id is not None:
        statement["Condition"] = {"StringEquals": {"sts:ExternalId": external_id}}
    return {"Version": "2012-10-17", "Statement": [statement]}


def create(iam: Any, function_role_arn: str, developer_arn: str) -> None:
    """Create the data account's roles with ``iam``, a boto3 IAM client of that account (made
    while moto's auth is off), trusting the function's execution role (and the developer's
    user, for ``python -m iamdb token``)."""
    account = principal_account(function_role_arn)
    roles = (
        (DATA_ROLE_ARN, trust(function_role_arn, developer_arn), CONNECT_POLICY),
        (TENANT_ROLE_ARN, trust(function_role_arn, external_id=TENANT_EXTERNAL_ID), CONNECT_POLICY),
        (NOCONNECT_ROLE_ARN, trust(function_role_arn), NOCONNECT_POLICY),
        (UNTRUSTED_ROLE_ARN, trust(f"arn:aws:iam::{account}:role/someone-else"), CONNECT_POLICY),
    )
    for arn, trusted, policy in roles:
        name = arn.rsplit("/", 1)[1]
        iam.create_role(
            RoleName=name, AssumeRolePolicyDocument=json.dumps(trusted), MaxSessionDuration=43200
        )
        iam.put_role_policy(RoleName=name, PolicyName=name, PolicyDocument=json.dumps(policy))


class RolePolicies:
    """``authorize(principal_arn, server, user, action)`` for the data account's databases: the
    principal's role policies in moto (inline and attached) must allow ``action`` on the
    server's resource (``resources``: server name -> a function of the user)."""

    def __init__(self, resources: dict[str, Callable[[str], str]]) -> None:
        self.resources = resources

    def __call__(self, principal_arn: str, server: str, user: str, action: str) -> tuple[bool, str]:
        from devstack.sam.template import policy_allows

        resource = self.resources[server](user)
        statements = list(_statements(iam_identity(principal_arn)))
        if policy_allows(statements, action, resource):
            return True, "allowed"
        return False, f"no {action} on {resource} in the policies of {iam_identity(principal_arn)}"


def _statements(identity: str) -> Iterator[dict[str, Any]]:
    """The statements of the inline and attached policies of a role (or user) in moto."""
    from moto.iam.exceptions import NotFoundException
    from moto.iam.models import iam_backends

    backend = iam_backends[principal_account(identity)][PARTITION]
    kind, _, name = identity.split(":", 5)[5].partition("/")
    try:
        holder = backend.get_role(name) if kind == "role" else backend.get_user(name)
    except NotFoundException:
        return
    documents = list(holder.policies.values())
    for managed in holder.managed_policies.values():
        documents += [v.document for v in managed.versions if v.is_default]
    for document in documents:
        found = json.loads(document).get("Statement", [])
        yield from found if isinstance(found, list) else [found]


def cross_account_trust() -> None:
    """Correct moto's AssumeRole checks (see the module docstring): the role is found in its own
    account, and its trust policy's principals match as AWS matches them (a role ARN admits its
    sessions, an account's root or 12-digit id admits its principals, ``*`` everyone; explicit
    Deny statements win). Idempotent."""
    from moto.iam import access_control
    from moto.iam.utils import REQUIRE_RESOURCE_ACCESS_POLICIES_CHECK

    base: Any = access_control.IAMRequestBase
    if getattr(base, "_devstack_trust", False):
        return

    def is_assuming(self: Any, resource_arn: str) -> bool:
        return (
            self._action in REQUIRE_RESOURCE_ACCESS_POLICIES_CHECK
            and _role_of(resource_arn) is not None
        )

    def trusted(self: Any, role_arn: str) -> bool:
        from moto.iam.utils import format_incoming_conditional_values

        role = _role_of(role_arn)
        if role is None:
            return False
        conditions = format_incoming_conditional_values(self._data)
        return trust_admits(role.assume_role_policy_document, self._access_key.arn, conditions)

    base._is_assuming_role_operation = is_assuming
    base._check_role_trust_relationship = trusted
    base._devstack_trust = True


def trust_admits(document: Any, caller_arn: str, context: dict[str, str]) -> bool:
    """Whether a trust policy admits ``caller_arn`` to ``sts:AssumeRole``, given the request's
    condition keys (``context``: ``sts:ExternalId``). An explicit Deny wins; a condition on a
    key the request lacks, or with an operator devstack does not know, does not hold (AWS
    evaluates a missing key as not matching; moto passed both)."""
    from devstack.sam.template import iam_match

    parsed = json.loads(document) if isinstance(document, str) else document
    statements = parsed.get("Statement", [])
    allowed = False
    for statement in statements if isinstance(statements, list) else [statements]:
        actions = statement.get("Action", [])
        actions = [actions] if isinstance(actions, str) else actions
        if not any(iam_match(a, "sts:AssumeRole", ignore_case=True) for a in actions):
            continue
        if not _names_caller(statement.get("Principal"), caller_arn):
            continue
        if not _conditions_hold(statement.get("Condition", {}), context):
            continue
        if statement.get("Effect") == "Deny":
            return False
        allowed = allowed or statement.get("Effect") == "Allow"
    return allowed


def _conditions_hold(conditions: dict[str, dict[str, Any]], context: dict[str, str]) -> bool:
    from devstack.sam.template import iam_match

    for operator, keys in conditions.items():
        for key, expected in keys.items():
            values = [expected] if isinstance(expected, str) else list(expected)
            actual = context.get(key)
            if actual is None:
                return False
            if operator == "StringEquals":
                matched = actual in values
            elif operator == "StringLike":
                matched = any(iam_match(v, actual, ignore_case=False) for v in values)
            else:
                return False
            if not matched:
                return False
    return True


def _names_caller(principal: Any, caller_arn: str) -> bool:
    """Whether a statement's ``Principal`` names the caller as AWS reads it."""
    if principal == "*":
        return True
    listed = principal.get("AWS", []) if isinstance(principal, dict) else []
    names = {listed} if isinstance(listed, str) else set(listed)
    account = principal_account(caller_arn)
    candidates = {caller_arn, iam_identity(caller_arn), f"arn:aws:iam::{account}:root", account}
    return "*" in names or bool(names & candidates)


def _role_of(arn: str) -> Any:
    """The moto role of ``arn`` in its own account, or None."""
    from moto.iam.exceptions import NotFoundException
    from moto.iam.models import iam_backends

    if ":role/" not in arn:
        return None
    try:
        return iam_backends[principal_account(arn)][PARTITION].get_role_by_arn(arn)
    except (NotFoundException, KeyError):
        return None

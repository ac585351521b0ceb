"""devstack holds the example function to the IAM policy that template.yaml gives it.

AWS refuses an IAM login whose principal may not make it: ``rds-db:connect`` on that exact
``dbuser`` ARN (RDS), ``dsql:DbConnect`` / ``dsql:DbConnectAdmin`` on the cluster ARN (Aurora DSQL),
``elasticache:Connect`` on both the cache and the user (ElastiCache). devstack reads the example
functions' policy statements, and those of the template's managed policies (``DsqlConnectPolicy``,
made to be attached to function roles), from ``template.yaml`` with the parameters of
``samconfig.toml``'s ``local_invoke`` section (devstack's DbiResourceIds, cluster id and users). The
verifier asks :class:`TemplatePolicy` after the signature checks, so a typo in the template's
resource ARN fails locally too.

Only the example function's role is judged: other principals (a developer's key, the
tests' own roles) have no template policy to be held to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from devstack.sam.template import (
    ACCOUNT,
    PARTITION,
    REGION,
    Template,
    dbuser_arn,
    function_statements,
    load_samconfig,
)

REPO = Path(__file__).resolve().parents[2]
# devstack's instances, as samconfig.toml's local_invoke parameters name them.
DBI_RESOURCE_IDS = {"pg": "db-IAMDBDEVSTACKPG0000000000", "mysql": "db-IAMDBDEVSTACKMYSQL0000000"}
DSQL_CLUSTER_ID = "iamdbdevstack0000000000000"  # 26 of [a-z0-9], as DSQL's cluster ids
DSQL_CLUSTER_ARN = f"arn:{PARTITION}:dsql:{REGION}:{ACCOUNT}:cluster/{DSQL_CLUSTER_ID}"
DSQL_SERVER = "dsql"  # the verifier's name for the DSQL endpoint
# devstack's ElastiCache cache (a replication group) and its IAM-enabled user, as samconfig.toml's
# local_invoke parameters name them; elasticache:Connect must allow both ARNs.
VALKEY_SERVER = "valkey"  # the verifier's name for the Valkey front
VALKEY_CACHE = "iamdb-cache"
VALKEY_USER = "iamdb-app"
VALKEY_CACHE_ARN = f"arn:{PARTITION}:elasticache:{REGION}:{ACCOUNT}:replicationgroup:{VALKEY_CACHE}"
# devstack's own grant for the named-instance user the template does not know.
EXTRA_USERS = ("iamdb_reporting",)


class TemplatePolicy:
    """``authorize(principal_arn, server, user, action) -> (ok, reason)`` for the Verifier."""

    def __init__(self, role_name: str, statements: list[dict[str, Any]]) -> None:
        self._role = role_name
        self._statements = statements

    @classmethod
    def from_template(
        cls, role_name: str, template: Path = REPO / "template.yaml"
    ) -> TemplatePolicy:
        overrides = load_samconfig(template.parent / "samconfig.toml", "local_invoke")
        loaded = Template.load(template, overrides.parameter_overrides)
        statements = [s for group in function_statements(loaded).values() for s in group]
        statements += _managed_policy_statements(loaded)
        extra = [dbuser_arn(dbi, user) for dbi in DBI_RESOURCE_IDS.values() for user in EXTRA_USERS]
        statements.append({"Effect": "Allow", "Action": "rds-db:connect", "Resource": extra})
        return cls(role_name, statements)

    def __call__(self, principal_arn: str, server: str, user: str, action: str) -> tuple[bool, str]:
        from devstack.sam.template import policy_allows

        if f":assumed-role/{self._role}/" not in principal_arn:
            return True, "not the example function"
        if server == DSQL_SERVER:
            resources = [DSQL_CLUSTER_ARN]
        elif server == VALKEY_SERVER:
            user_arn = f"arn:{PARTITION}:elasticache:{REGION}:{ACCOUNT}:user:{user}"
            resources = [VALKEY_CACHE_ARN, user_arn]
        else:
            resources = [dbuser_arn(DBI_RESOURCE_IDS[server], user)]
        for resource in resources:
            if not policy_allows(self._statements, action, resource):
                return False, f"no {action} on {resource} in template.yaml's policies"
        return True, "allowed"


def _managed_policy_statements(template: Template) -> list[dict[str, Any]]:
    """The statements of the template's ``AWS::IAM::ManagedPolicy`` resources, resolved."""
    found: list[dict[str, Any]] = []
    for resource in template.resources.values():
        if resource.get("Type") != "AWS::IAM::ManagedPolicy":
            continue
        document = template.resolve((resource.get("Properties") or {}).get("PolicyDocument"))
        statements = (document or {}).get("Statement", [])
        found.extend(statements if isinstance(statements, list) else [statements])
    return found

"""devstack: the local AWS and databases that verify iamdb's logins for real, in two parts.

The verifying stack (this package): moto (STS, IAM, DynamoDB) with signature checking on
(:mod:`devstack.aws`), throwaway PostgreSQL, MariaDB and an Aurora DSQL endpoint whose logins a
token verifier checks the way RDS and DSQL do (:mod:`devstack.verifier`, :mod:`devstack.sigv4`),
and a MongoDB wire-protocol peer that verifies MONGODB-AWS logins (``devstack.mongo*``), all on
a throwaway TLS CA (:mod:`devstack.tls`). :class:`devstack.stack.Stack` starts them;
``python -m devstack up`` and the tests' session fixtures use it.

The SAM emulation (:mod:`devstack.sam`): ``template.yaml`` read as SAM would, functions run
like Lambda without Docker (``python -m devstack invoke``), and the template's IAM policies
held against the stack's logins.
"""

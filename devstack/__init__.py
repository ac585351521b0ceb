"""devstack: the local AWS and databases that verify RDS IAM auth for real.

`python -m devstack up` starts moto (STS, IAM, DynamoDB) with signature checking on,
a throwaway PostgreSQL and a throwaway MariaDB whose logins are checked by a verifier
that validates RDS IAM tokens the way RDS does. The test suite uses the same code
through session-scoped pytest fixtures.
"""

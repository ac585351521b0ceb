"""AWS without the SDK: SigV4 and the RDS/DSQL token presigner, the credential chain (the
environment, the container endpoint, botocore's chain last), HTTP with every wait bounded, TLS
trust, the AWS client (DynamoDB, STS) and AssumeRole, and the redaction of botocore's logs.
Imports :mod:`iamdb._core` and :mod:`iamdb.errors` only."""

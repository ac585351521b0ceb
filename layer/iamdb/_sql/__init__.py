"""PostgreSQL, MySQL and Aurora DSQL: an instance's configuration, its tokens, the permits of
new logins (per process, and the fleet's queue on DynamoDB), the login, the managed connection
behind each singleton, the drivers and what a refusal means. Imports :mod:`iamdb._aws`,
:mod:`iamdb._core` and :mod:`iamdb.errors`; never :mod:`iamdb._mongo`."""

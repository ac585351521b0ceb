"""Valkey and Redis OSS on ElastiCache (node-based and serverless) and MemoryDB, with IAM: the
configuration and what a token is signed for, the client (valkey-py) whose every new connection
presents a current token, and the handle behind ``get_valkey()`` that re-authenticates
connections before ElastiCache's 12 hours and replaces those that died while frozen. Imports
:mod:`iamdb._aws`, :mod:`iamdb._core` and :mod:`iamdb.errors` only."""

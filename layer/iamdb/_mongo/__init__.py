"""MongoDB (Atlas, Percona, DocumentDB) with MONGODB-AWS: the URI's rules, an instance's
configuration, iamdb's MONGODB-AWS signer for pymongo, the clients and the handle that renews
their credentials. Imports :mod:`iamdb._aws`, :mod:`iamdb._core` and :mod:`iamdb.errors`;
never :mod:`iamdb._sql`."""

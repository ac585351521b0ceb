"""The connection-slot simulation: a Lambda function's environments against a database with few
slots, iamdb's real login and managed-connection code in virtual time (:mod:`bench.fleetsim.sim`).

- :mod:`~bench.slotsim.model`: the database's slots and the driver over them;
- :mod:`~bench.slotsim.fleet`: Lambda (routing, cold starts, keep times), traffic, one run;
- :mod:`~bench.slotsim.between`: not simulated, on devstack: the handler wrapped by
  ``iamdb.lambda_handler`` beside the same unwrapped (processes frozen with SIGSTOP).

``python -m bench.slots`` prints the table, main's iamdb beside this one.
"""

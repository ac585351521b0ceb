"""A fleet-scale simulation of iamdb's IAM login limiter, in virtual time.

Thousands of simulated Lambda environments run iamdb's real limiter code, each in a simulated
thread (a greenlet) of its own, against a modelled DynamoDB table and a modelled RDS instance; a
scheduler runs one at a time and moves a virtual clock, so a run is fast and deterministic.

- :mod:`~bench.fleetsim.sim`: the scheduler and virtual clock;
- :mod:`~bench.fleetsim.dynamodb` (with :mod:`~bench.fleetsim.values`,
  :mod:`~bench.fleetsim.expr`, :mod:`~bench.fleetsim.parse`): the table model;
- :mod:`~bench.fleetsim.rds`: the instance throttling new IAM logins;
- :mod:`~bench.fleetsim.strategy`: what a strategy (one environment's life) gets and returns,
  its clock possibly off true time; :mod:`~bench.fleetsim.strategies`: the registered ones;
  :mod:`~bench.fleetsim.legacy` and :mod:`~bench.fleetsim.baseline`: frozen copies of earlier
  limiters they drive for comparison;
- :mod:`~bench.fleetsim.run`: scenarios, the optimum, one row's numbers;
  :mod:`~bench.fleetsim.faults`: one clock off or a corrupt queue item among 1,000. ``python
  -m bench.fleet`` prints both tables.
"""

"""Scenarios, strategies and the bench table of the fleet simulation."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench import fleet
from bench.fleetsim.run import Scenario, optimum, paced_ideal, simulate, summarize
from bench.fleetsim.sim import EPOCH, Sim, SimError
from bench.fleetsim.strategy import STRATEGIES, Ctx, LambdaContext, Outcome, strategy
from iamdb.errors import IamDbError


@pytest.fixture
def extra_strategies() -> Iterator[None]:
    before = dict(STRATEGIES)
    yield
    STRATEGIES.clear()
    STRATEGIES.update(before)


def test_the_optimum_paces_at_09_r_within_the_deadline_margin() -> None:
    burst = Scenario(600, 0.0, 10, 10)
    # 9 logins/s from t=0 to 9.5 s: 0, 1/9, ..., 85/9 (= 9.44 s).
    assert len(optimum(burst, [EPOCH] * 600)) == 86
    assert len(optimum(Scenario(60, 0.0, 10, 10), [EPOCH] * 60)) == 60
    assert len(optimum(Scenario(3000, 0.0, 200, 10), [EPOCH] * 3000)) == 1710  # 180/s x 9.5 s
    # Spread arrivals, 1 s left (0.5 s after the margin), R = 2 (logins 1/1.8 s apart): the
    # second arrival at 0 cannot be served by 0.5 s, the one at 0.1 can (by 0.6 s), the last
    # goes at its arrival.
    short = Scenario(4, 1.0, 2, 1.0)
    logins = optimum(short, [EPOCH, EPOCH, EPOCH + 0.1, EPOCH + 5.0])
    assert logins == pytest.approx([EPOCH, EPOCH + 1 / 1.8, EPOCH + 5.0])
    assert paced_ideal(Scenario(60, 0.0, 10, 10), [EPOCH] * 60, 60) == pytest.approx(EPOCH + 59 / 9)


def test_the_lambda_context_follows_virtual_time() -> None:
    sim = Sim()
    context = LambdaContext(sim, EPOCH + 10.0)
    seen: list[int] = []

    def body() -> None:
        seen.append(context.get_remaining_time_in_millis())
        sim.sleep(2.5)
        seen.append(context.get_remaining_time_in_millis())
        sim.sleep(60.0)
        seen.append(context.get_remaining_time_in_millis())

    sim.spawn(body, EPOCH)
    sim.run()
    assert seen == [10_000, 7_500, 0]


def test_legacy_paces_a_small_burst_and_same_seed_gives_the_same_run() -> None:
    scenario = Scenario(60, 0.0, 10, 10)
    first = simulate(scenario, "legacy", seed=5)
    summary = summarize(first)
    assert (summary.served, summary.refused, summary.peak_logins, summary.fail_opens) == (
        60,
        0,
        10,
        0,
    )
    again = simulate(scenario, "legacy", seed=5)
    assert again.envs == first.envs
    assert summarize(again) == summary
    other = simulate(scenario, "legacy", seed=6)
    assert other.envs != first.envs


def test_legacy_at_600_environments_fails_open_into_a_login_storm() -> None:
    """The mechanism issue 10 describes: the window item is throttled, throttling is taken for
    an outage, environments log in unpaced, RDS refuses, retries die with AuthError."""
    summary = summarize(simulate(Scenario(600, 0.0, 10, 10), "legacy"))
    assert summary.throttled > 0 and summary.item_peak_writes == 1000
    assert summary.fail_opens > 0 and summary.refused > 0
    assert summary.peak_logins > 100  # new logins reaching RDS in one rolling second, R = 10
    assert summary.errors["AuthError"] > 0 and summary.errors["ThrottleError"] > 0


def test_a_strategy_plugs_in_by_name_and_gets_its_own_identity(extra_strategies: None) -> None:
    tokens: list[str] = []

    @strategy("naive")
    def naive(ctx: Ctx) -> Outcome:
        """No limiter at all: sign and log in at arrival."""
        assert ctx.deadline == ctx.arrival + 10
        assert ctx.context.get_remaining_time_in_millis() == 10_000
        assert ctx.endpoint.endswith(":5432")
        token = ctx.sign_token()
        tokens.append(token)
        try:
            return Outcome.success(ctx, ctx.rds.connect(token, ctx.rng))
        except IamDbError as exc:
            return Outcome.failure(ctx, exc)

    with pytest.raises(ValueError, match="already registered"):
        strategy("naive")(naive)
    summary = summarize(simulate(Scenario(50, 0.0, 10, 10), "naive"))
    assert len(set(tokens)) == 50  # every environment has its own role session
    assert (summary.served, summary.refused, summary.errors) == (10, 40, {"AuthError": 40})
    assert summary.writes_per_served == 0.0
    assert summary.median_told_unserved is not None and summary.median_told_unserved < 0.1


def test_a_strategy_that_raises_anything_else_stops_the_run(extra_strategies: None) -> None:
    @strategy("broken")
    def broken(ctx: Ctx) -> Outcome:
        raise KeyError("bug")

    with pytest.raises(SimError, match="KeyError"):
        simulate(Scenario(3, 0.0, 10, 10), "broken")


def test_a_login_after_the_invocation_ended_is_not_served(extra_strategies: None) -> None:
    @strategy("late")
    def late(ctx: Ctx) -> Outcome:
        ctx.sleep(ctx.deadline - ctx.now() + 1.0)
        return Outcome.success(ctx, ctx.rds.connect(ctx.sign_token(), ctx.rng))

    summary = summarize(simulate(Scenario(2, 0.0, 10, 10), "late"))
    assert (summary.served, summary.errors) == (0, {"LambdaTimeout": 2})


def test_bench_rows_option_and_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert fleet.rows_wanted("1,3-5") == [1, 3, 4, 5]
    assert fleet.rows_wanted(None) == list(range(1, 17))
    with pytest.raises(SystemExit):
        fleet.rows_wanted("17")
    fleet.main(["--rows", "1", "--strategy", "legacy"])
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("| 1 |")]
    assert len(lines) == 1
    cells = [c.strip() for c in lines[0].strip("|").split("|")]
    assert cells[:8] == ["1", "60", "t=0", "10", "10 s", "legacy", "60", "60"]
    assert len(cells) == len(fleet.HEADERS)

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from lunara.plans import PLANS, PlanName, effective_plan, plan_named

NOW = 1_800_000_000.0


def test_every_plan_is_defined_once_and_paid_plans_cost_stars() -> None:
    assert set(PLANS) == set(PlanName)
    assert PLANS[PlanName.FREE].price_stars == 0
    assert 0 < PLANS[PlanName.PRO].price_stars < PLANS[PlanName.ELITE].price_stars


def test_higher_plans_never_allow_less() -> None:
    free, pro, elite = (PLANS[name] for name in (PlanName.FREE, PlanName.PRO, PlanName.ELITE))
    for lower, higher in ((free, pro), (pro, elite)):
        assert higher.max_symbols >= lower.max_symbols
        assert higher.max_open_positions >= lower.max_open_positions
        assert higher.ai_analyses_per_day >= lower.ai_analyses_per_day


def test_plan_names_are_read_case_insensitively_and_unknown_names_are_none() -> None:
    assert plan_named(" Pro ") is PLANS[PlanName.PRO]
    assert plan_named("ELITE") is PLANS[PlanName.ELITE]
    assert plan_named("platinum") is None
    assert plan_named("") is None


def test_a_paid_plan_is_in_force_until_it_expires_then_free() -> None:
    assert effective_plan("pro", NOW + 1, NOW).name is PlanName.PRO
    assert effective_plan("pro", NOW, NOW).name is PlanName.FREE
    assert effective_plan("elite", None, NOW).name is PlanName.FREE
    assert effective_plan(None, None, NOW).name is PlanName.FREE
    assert effective_plan("unknown", NOW + 100, NOW).name is PlanName.FREE


@given(name=st.text(max_size=20), expires=st.none() | st.floats(allow_nan=False))
def test_effective_plan_is_always_a_known_plan(name: str, expires: float | None) -> None:
    plan = effective_plan(name, expires, NOW)
    assert plan in PLANS.values()
    if plan.name is not PlanName.FREE:
        assert expires is not None
        assert expires > NOW

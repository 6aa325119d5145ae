"""Subscription plans: one place for their limits and prices (Telegram Stars).

Plan limits are a separate check from roles: a role says which commands someone may
use at all, a plan says how much of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

PLAN_PERIOD_S = 30 * 24 * 3600  # a subscription buys 30 days


class PlanName(StrEnum):
    FREE = "free"
    PRO = "pro"
    ELITE = "elite"


@dataclass(frozen=True)
class Plan:
    name: PlanName
    title: str
    price_stars: int  # 0 for free
    max_symbols: int
    max_open_positions: int
    ai_analyses_per_day: int


PLANS: dict[PlanName, Plan] = {
    PlanName.FREE: Plan(PlanName.FREE, "Free", 0, 2, 2, 3),
    PlanName.PRO: Plan(PlanName.PRO, "Pro", 250, 10, 10, 30),
    PlanName.ELITE: Plan(PlanName.ELITE, "Elite", 750, 50, 50, 200),
}


def plan_named(raw: str) -> Plan | None:
    try:
        return PLANS[PlanName(raw.strip().lower())]
    except ValueError:
        return None


def effective_plan(name: str | None, expires_at: float | None, now: float) -> Plan:
    """The plan in force: a paid plan past its expiry falls back to free."""
    plan = plan_named(name or PlanName.FREE.value) or PLANS[PlanName.FREE]
    if plan.name is not PlanName.FREE and (expires_at is None or expires_at <= now):
        return PLANS[PlanName.FREE]
    return plan

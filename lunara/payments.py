"""Plans paid with Telegram Stars: the currency and the invoice payload.

The invoice payload names the plan and the payer (`plan:<name>:<user id>`);
`plan_paid_for` reads it back and checks it against the plan book. Recording payments
and refunds is the account service's (`lunara.accounts`); this module is pure.
"""

from __future__ import annotations

from lunara import plans as plan_book

STARS = "XTR"


def invoice_payload(plan: plan_book.Plan, user_id: int) -> str:
    return f"plan:{plan.name.value}:{user_id}"


def plan_paid_for(
    user_id: int, payload: str, currency: str, total_amount: int
) -> plan_book.Plan | str:
    """The plan `payload` buys if this payer, currency and amount pay for it; else why not."""
    parts = payload.split(":")
    if len(parts) != 3 or parts[0] != "plan":
        return "This invoice is not one of ours."
    plan = plan_book.plan_named(parts[1])
    if plan is None or plan.price_stars == 0:
        return "That plan no longer exists; see /plans."
    if parts[2] != str(user_id):
        return "This invoice was made for someone else."
    if currency != STARS or total_amount != plan.price_stars:
        return "The price changed; ask for a new invoice with /subscribe."
    return plan

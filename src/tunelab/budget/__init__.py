"""Training budgets (conf/budget/): tokens, seconds, FLOPs beside trainer.max_steps."""

from tunelab.budget.meter import BudgetMeter, budget_kind, budget_limits

__all__ = ["BudgetMeter", "budget_kind", "budget_limits"]

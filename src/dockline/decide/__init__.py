"""dockline.decide: policies over predictions, health and constraints; audit; scoring.

Pure policies (:func:`decide`) turn one cycle's :class:`~dockline.core.decisions.DecisionInput`
into a :class:`~dockline.core.decisions.Decision`; the audit log keeps every decision; the scoring
helpers turn per-minute station states into the operator's KPIs.
"""

from dockline.decide.forecast import POISSON_MODEL_VERSION, poisson_risk
from dockline.decide.policies import POLICIES, Gates, decide, evaluate_gates

__all__ = ["POISSON_MODEL_VERSION", "POLICIES", "Gates", "decide", "evaluate_gates", "poisson_risk"]

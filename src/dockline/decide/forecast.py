"""A forecaster that needs no trained bundle: expected demand → ``p_empty`` / ``p_full``.

Given each station's expected departures and arrivals over the horizon (e.g. the simulator's own
rates), departures and arrivals are modelled as independent Poisson counts, so the net change is
Skellam-distributed: ``p_empty = P(departures - arrivals >= bikes)`` and
``p_full = P(arrivals - departures >= docks)``. It reads the *end* of the horizon, so it
understates risk that passes within the hour; it is labelled ``poisson-rates`` wherever it is used,
never passed off as the trained model.

>>> import numpy as np
>>> pe, pf = poisson_risk(np.array([0, 10]), np.array([10, 10]), np.array([3.0, 3.0]),
...                       np.array([1.0, 1.0]))
>>> bool(pe[0] > 0.9 and pf[1] < 0.01)
True
"""

from __future__ import annotations

import numpy as np
from scipy.stats import skellam

__all__ = ["POISSON_MODEL_VERSION", "poisson_risk"]

POISSON_MODEL_VERSION = "poisson-rates"


def poisson_risk(
    bikes: np.ndarray, docks: np.ndarray, departures: np.ndarray, arrivals: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(p_empty, p_full) per station from expected departures and arrivals over the horizon."""
    out_ = np.maximum(np.asarray(departures, dtype=np.float64), 1e-9)
    in_ = np.maximum(np.asarray(arrivals, dtype=np.float64), 1e-9)
    # P(D - A >= b) = sf(b - 1); a station already empty (b = 0) is certain.
    p_empty = np.where(bikes <= 0, 1.0, skellam.sf(np.asarray(bikes) - 1, out_, in_))
    p_full = np.where(docks <= 0, 1.0, skellam.sf(np.asarray(docks) - 1, in_, out_))
    return np.clip(p_empty, 0.0, 1.0), np.clip(p_full, 0.0, 1.0)

"""The evaluation report: one self-contained HTML page (tables and matplotlib plots inline)."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["render_report", "save_report", "write_plots"]

_COLUMNS = (
    ("empty_minutes", "empty station-min"),
    ("full_minutes", "full station-min"),
    ("empty_full_minutes", "empty+full"),
    ("outage_minutes", "outage min (>10 min, 06–22)"),
    ("outage_cost_usd", "outage cost $"),
    ("failed_rentals", "failed rentals"),
    ("diverted_returns", "diverted returns"),
    ("truck_km", "truck-km"),
    ("moves", "moves"),
)
_COLORS = {"none": "#888888", "reactive": "#e69f00", "predictive": "#0072b2", "oracle": "#009e73"}


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def write_plots(
    summary: Mapping[str, Mapping[str, float]],
    curves: Mapping[str, np.ndarray],
    hours: np.ndarray,
) -> dict[str, bytes]:
    """PNG bytes: ``curves`` (empty+full stations over time) and ``bars`` (KPIs with 95 % CIs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, bytes] = {}
    fig, ax = plt.subplots(figsize=(10, 3.6))
    step = max(1, len(hours) // 2000)
    for policy, curve in curves.items():
        # An hour's rolling mean keeps the daily shape and drops minute-to-minute noise.
        smooth = np.convolve(curve, np.ones(60) / 60, mode="same")
        ax.plot(hours[::step], smooth[::step], label=policy, color=_COLORS.get(policy), lw=1.3)
    ax.set_xlabel("hours since the start (Monday 00:00 Chicago)")
    ax.set_ylabel("stations empty or full")
    ax.legend(loc="upper right", ncol=4, fontsize=8)
    ax.grid(alpha=0.3)
    out["curves"] = _png(fig)
    plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(10, 3.2))
    for ax, metric in zip(axes, ("empty_minutes", "full_minutes", "outage_minutes"), strict=True):
        names = list(summary)
        means = [summary[p][metric] for p in names]
        err = np.array(
            [[m - summary[p][f"{metric}_low"] for p, m in zip(names, means, strict=True)],
             [summary[p][f"{metric}_high"] - m for p, m in zip(names, means, strict=True)]]
        )  # fmt: skip
        ax.bar(names, means, yerr=err, capsize=3, color=[_COLORS.get(p, "#555") for p in names])
        ax.set_title(metric.replace("_", " "), fontsize=9)
        ax.tick_params(axis="x", labelsize=8, rotation=20)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    out["bars"] = _png(fig)
    plt.close(fig)
    return out


def render_report(
    summary: Mapping[str, Mapping[str, float]],
    config: Mapping[str, Any],
    plots: Mapping[str, bytes],
    command: str,
) -> str:
    """The HTML page."""
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in _COLUMNS)
    rows = []
    for policy, m in summary.items():
        cells = "".join(
            f"<td>{m[k]:,.0f}<br><small>[{m[k + '_low']:,.0f}, {m[k + '_high']:,.0f}]</small></td>"
            for k, _ in _COLUMNS
        )
        rows.append(f"<tr><th>{html.escape(policy)}</th>{cells}</tr>")
    goals = []
    if "predictive" in summary:
        p = summary["predictive"]
        for key, goal in (("reduction_vs_none", 0.5), ("reduction_vs_reactive", 0.2)):
            if key in p:
                verdict = "met" if p[key] >= goal else "missed"
                goals.append(
                    f"<li>predictive {key.replace('_', ' ')}: {p[key]:.1%} "
                    f"[{p[key + '_low']:.1%}, {p[key + '_high']:.1%}] — goal ≥ {goal:.0%}: "
                    f"<b>{verdict}</b></li>"
                )
        if "share_of_oracle_gain" in p:
            goals.append(
                f"<li>share of the oracle's gain: {p['share_of_oracle_gain']:.1%} "
                f"[{p['share_of_oracle_gain_low']:.1%}, {p['share_of_oracle_gain_high']:.1%}]</li>"
            )
    images = "".join(
        f'<img alt="{name}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        for name, png in plots.items()
    )
    conf = html.escape(", ".join(f"{k}={v}" for k, v in config.items()))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>dockline decide evaluate</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}
table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:4px 8px;
text-align:right}}img{{max-width:100%;display:block;margin:1em 0}}</style></head><body>
<h1>Rebalancing policies on the simulated city</h1>
<p><code>{html.escape(command)}</code></p><p>{conf}</p>
<p>Mean over seeds, 95 % t-interval below. The predictive policy's forecasts are the
simulator's own expected demand through a Poisson model (<code>poisson-rates</code>), not a
trained bundle.</p>
<table><tr><th>policy</th>{head}</tr>{"".join(rows)}</table>
<ul>{"".join(goals)}</ul>{images}</body></html>
"""


def save_report(path: Path, text: str) -> Path:
    """Write the page (creating folders); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path

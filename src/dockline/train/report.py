"""The evaluation report of one candidate: ``metrics.json`` and a self-contained ``report.html``.

Plots are drawn with Matplotlib's object API on the Agg canvas (no global pyplot state) and
embedded as base64 PNGs without metadata, so the same evaluation gives the same bytes.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from dockline.train.evaluate import Reliability, json_safe

__all__ = ["METRICS_FILE", "REPORT_FILE", "ReportData", "write_report"]

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"


@dataclass(frozen=True, slots=True)
class ReportData:
    """Everything one candidate's report shows."""

    candidate: str
    kind: str
    """``trained`` or ``baseline``."""
    label: str
    primary_metric: str
    params: dict[str, Any]
    test: dict[str, float]
    validation: dict[str, float]
    calibration: dict[str, Any]
    threshold: dict[str, Any]
    threshold_curve: dict[str, list[float]]
    lift: dict[str, float]
    slices: dict[str, Any]
    """The slice table (:func:`dockline.train.slices.compare_slices`)."""
    reliability: Reliability
    pr: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]
    """Test-split (precision, recall), thresholds descending."""
    importance: dict[str, float] = field(default_factory=dict)
    splits: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per split: time range, rows and composition (see :mod:`dockline.train.composition`)."""
    extra: dict[str, Any] = field(default_factory=dict)
    pr_baselines: dict[str, tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]] = field(
        default_factory=dict
    )
    """The baselines' test-split (precision, recall), drawn beside the candidate's curve."""
    base_rate: float | None = None
    """The test split's positive rate: the precision of a random ranking."""
    run: dict[str, Any] = field(default_factory=dict)
    """The run's story, filled in once known: ``selected``, ``why``, ``gate`` (passed,
    reasons), ``version``, ``dataset``, ``dataset_hash`` (see :func:`run_section`)."""

    def as_json(self) -> dict[str, Any]:
        """The content of ``metrics.json``."""
        r = self.reliability
        out: dict[str, Any] = json_safe(
            {
                "candidate": self.candidate,
                "kind": self.kind,
                "label": self.label,
                "primary_metric": self.primary_metric,
                "params": self.params,
                "test": self.test,
                "validation": self.validation,
                "calibration": self.calibration,
                "threshold": self.threshold,
                "threshold_curve": self.threshold_curve,
                "lift": self.lift,
                "slices": self.slices,
                "reliability": {
                    "edges": r.edges,
                    "mean_predicted": r.mean_predicted,
                    "observed": r.observed,
                    "counts": r.counts,
                },
                "feature_importance": self.importance,
                "splits": self.splits,
                "run": self.run,
                **self.extra,
            }
        )
        return out


def _png(fig: Any) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _img(fig: Any) -> str:
    """The figure as an ``<img>`` whose alt text names its title and every legend entry, so
    the curves a plot carries can be read (and checked) without looking at the pixels."""
    parts = []
    for ax in fig.axes:
        _, labels = ax.get_legend_handles_labels()
        title = ax.get_title() or ax.get_title(loc="left")
        parts.append(f"{title}: {', '.join(labels)}" if labels else title)
    alt = html.escape("; ".join(parts), quote=True)
    return f'<img alt="{alt}" src="data:image/png;base64,{_png(fig)}">'


def _figure(width: float = 5.0, height: float = 3.6) -> Any:
    from matplotlib.figure import Figure

    # Fixed margins: a layout engine costs more than the drawing itself.
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=0.16, right=0.97, bottom=0.15, top=0.9)
    return fig


def _reliability_plot(r: Reliability) -> str:
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect")
    used = r.counts > 0
    ax.plot(r.mean_predicted[used], r.observed[used], marker="o", label="model")
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title("Reliability (test split)")
    ax.legend(loc="upper left")
    return _img(fig)


def _pr_plot(
    precision: npt.NDArray[np.float64],
    recall: npt.NDArray[np.float64],
    point: tuple[float, float],
    baselines: Mapping[str, tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]],
    base_rate: float | None,
) -> str:
    fig = _figure()
    ax = fig.add_subplot()
    # Point i's precision holds over recall (r[i-1], r[i]]: "pre" steps (with "post" a score
    # with few distinct values, like persistence, drew each precision one step too far right).
    ax.step(np.r_[0.0, recall], np.r_[1.0, precision], where="pre", label="model", zorder=3)
    for (name, (b_precision, b_recall)), style in zip(
        sorted(baselines.items()), ("--", "-."), strict=False
    ):
        ax.step(
            np.r_[0.0, b_recall],
            np.r_[1.0, b_precision],
            where="pre",
            linestyle=style,
            linewidth=1,
            label=f"baseline: {name}",
        )
    if base_rate is not None and math.isfinite(base_rate):
        ax.axhline(
            base_rate, color="grey", linestyle=":", linewidth=1, label=f"random ({base_rate:.2f})"
        )
    if all(math.isfinite(v) for v in point):
        ax.plot([point[0]], [point[1]], marker="o", color="crimson", label="threshold", zorder=4)
    ax.legend(loc="best", fontsize=7)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title("Precision-recall (test split)")
    return _img(fig)


def _threshold_plot(curve: Mapping[str, list[float]], choice: Mapping[str, Any]) -> str:
    """The calibration split's operating points, the target the threshold was chosen for, and
    the chosen threshold."""
    fig = _figure()
    ax = fig.add_subplot()
    t = curve.get("thresholds", [])
    chosen = float(choice.get("threshold", 0.5))
    if "cost" in curve:
        ax.plot(t, curve["cost"], label="expected cost")
        ax.set_ylabel("expected cost")
        cost_at = [c for x, c in zip(t, curve["cost"], strict=True) if x == chosen]
        if cost_at:
            ax.plot([chosen], [cost_at[0]], marker="o", color="crimson", label="minimum cost")
        ax.set_title(
            f"Threshold: least expected cost (miss {choice.get('cost_miss')},"
            f" false alarm {choice.get('cost_false_alarm')})",
            fontsize=9,
        )
    else:
        ax.plot(t, curve.get("precision", []), label="precision")
        ax.plot(t, curve.get("recall", []), label="recall")
        ax.set_ylabel("precision / recall")
        reached = choice.get("precision")
        if isinstance(reached, float | int):
            ax.plot([chosen], [float(reached)], marker="o", color="crimson", zorder=4)
        target = choice.get("target_precision")
        if isinstance(target, float | int):
            ax.axhline(
                float(target),
                color="darkgreen",
                linestyle="--",
                linewidth=1,
                label=f"target precision {float(target):g}",
            )
            ax.set_title(
                f"Threshold: most recall at precision ≥ {float(target):g}"
                + ("" if choice.get("achieved", True) else " (not reached)"),
                fontsize=9,
            )
    ax.axvline(chosen, color="crimson", linestyle=":", linewidth=1, label=f"chosen {chosen:.3f}")
    ax.set_xlabel("threshold (calibrated probability), calibration split")
    ax.legend(loc="best", fontsize=7)
    return _img(fig)


def _importance_plot(importance: Mapping[str, float], top: int = 20) -> str:
    items = sorted(
        ((k, v) for k, v in importance.items() if math.isfinite(v)), key=lambda kv: -kv[1]
    )[:top]
    fig = _figure(6.0, max(2.0, 0.28 * len(items) + 1))
    fig.subplots_adjust(left=0.38)  # room for long feature names
    ax = fig.add_subplot()
    names = [k for k, _ in reversed(items)]
    ax.barh(names, [v for _, v in reversed(items)])
    ax.set_xlabel("drop of the primary metric when shuffled")
    ax.set_title("Permutation importance (test sample)")
    ax.tick_params(axis="y", labelsize=7)
    return _img(fig)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "–" if not math.isfinite(value) else f"{value:.4g}"
    return html.escape(str(value))


def _table(rows: Mapping[str, Any], header: tuple[str, str] = ("metric", "value")) -> str:
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in rows.items())
    return f"<table><tr><th>{header[0]}</th><th>{header[1]}</th></tr>{body}</table>"


_STATUS = {"worse": "worse than persistence", "ok": "ok", "inconclusive": "inconclusive"}


def _slice_family_table(table: Mapping[str, Any], rows: list[Mapping[str, Any]]) -> str:
    models = [str(m) for m in table.get("models", [])]
    head = "<tr><th>slice</th><th>rows</th><th>positives</th><th>base rate</th>"
    head += "".join(f"<th>PR-AUC {html.escape(m)}</th>" for m in models)
    head += "".join(f"<th>Brier {html.escape(m)}</th>" for m in models)
    judged = "status" in (rows[0] if rows else {})
    if judged:
        head += f"<th>Δ {html.escape(str(table['metric']))} vs persistence</th><th>interval</th>"
        head += "<th>verdict</th>"
    body = []
    for r in rows:
        scores = r.get("models", {})
        cells = [
            html.escape(str(r["slice"])),
            f"{int(r['rows']):,}",
            f"{int(r['positives']):,}",
            _fmt(r.get("base_rate")),
            *(_fmt(scores.get(m, {}).get("pr_auc")) for m in models),
            *(_fmt(scores.get(m, {}).get("brier")) for m in models),
        ]
        status = r.get("status")
        if judged:
            interval = r.get("interval")
            cells += [
                "–" if r.get("delta") is None else f"{float(r['delta']):+.4f}",
                "–" if not interval else f"[{interval[0]:+.3f}, {interval[1]:+.3f}]",
                f"<span title='{html.escape(str(r.get('why', '')), quote=True)}'>"
                f"{_STATUS.get(str(status), '')}</span>",
            ]
        mark = {"worse": " class=flag", "inconclusive": " class=faint"}.get(str(status), "")
        body.append(f"<tr{mark}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table>{head}</tr>{''.join(body)}</table>"


def _slice_plot(family: str, table: Mapping[str, Any], rows: list[Mapping[str, Any]]) -> str:
    """Grouped bars of the judged metric per slice and model; inconclusive slices hatched."""
    metric = str(table.get("metric", "pr_auc"))
    models = [str(m) for m in table.get("models", [])]
    fig = _figure(6.0, 3.4)
    fig.subplots_adjust(bottom=0.32)
    ax = fig.add_subplot()
    x = np.arange(len(rows))
    width = 0.8 / max(len(models), 1)
    for i, model in enumerate(models):
        values = [r.get("models", {}).get(model, {}).get(metric) for r in rows]
        heights = [v if isinstance(v, float) and math.isfinite(v) else 0.0 for v in values]
        bars = ax.bar(x + (i - (len(models) - 1) / 2) * width, heights, width, label=model)
        for bar, r in zip(bars, rows, strict=True):
            if r.get("status") == "inconclusive":
                bar.set_hatch("//")
                bar.set_alpha(0.5)
    ax.set_xticks(x)
    labels = ax.set_xticklabels(
        [
            str(r["slice"])
            + {"worse": " (worse)", "inconclusive": " (inconclusive)"}.get(str(r.get("status")), "")
            for r in rows
        ],
        rotation=25,
        ha="right",
        fontsize=7,
    )
    for text, r in zip(labels, rows, strict=True):
        if r.get("status") == "worse":
            text.set_color("crimson")
        elif r.get("status") == "inconclusive":
            text.set_color("grey")
    ax.set_ylabel(metric)
    flagged = [str(r["slice"]) for r in rows if r.get("status") == "worse"]
    note = f" — worse: {', '.join(flagged)}" if flagged else ""
    ax.set_title(f"{metric} by {family} (test split){note}", fontsize=9)
    ax.legend(loc="best", fontsize=7)
    return _img(fig)


def _slice_section(table: Mapping[str, Any]) -> str:
    """Per slice family: a table and a plot of the candidate beside persistence (and the
    champion once the pipeline scored it), with each slice's verdict."""
    families = table.get("families", {})
    if not families:
        return "<p>No slice could be formed from this dataset's columns.</p>"
    rule = (
        f"<p class=rule>A slice is <b>worse</b> when {html.escape(str(table.get('candidate')))}"
        f" trails persistence on {html.escape(str(table.get('metric')))} by more than"
        f" {_fmt(table.get('tolerance'))} and the {_fmt(table.get('confidence'))} station-bootstrap"
        f" interval of the difference ({int(table.get('bootstrap', 0))} replicates; none: the point"
        f" estimate decides) lies below zero. Slices with fewer than {table.get('min_rows')} rows"
        f" or {table.get('min_positives')} positives are <i>inconclusive</i>, not judged."
        " Tune in <code>[train.slices]</code>.</p>"
    )
    parts = [rule]
    for family, rows in families.items():
        parts.append(
            f"<h3>{html.escape(family)}</h3>{_slice_family_table(table, rows)}"
            f"<div class='plots'>{_slice_plot(family, table, rows)}</div>"
        )
    return "".join(parts)


def _split_table(splits: Mapping[str, Mapping[str, Any]]) -> str:
    head = (
        "<tr><th>split</th><th>first as_of</th><th>last as_of</th><th>rows</th>"
        "<th>stations</th><th>label rate</th><th>weekend</th><th>flags</th></tr>"
    )
    body = []
    for name, s in splits.items():
        flags = [str(f) for f in s.get("flags", [])]
        share = s.get("weekend_share")
        rate = s.get("label_rate")
        body.append(
            f"<tr{' class=flag' if flags else ''}><td>{html.escape(name)}</td>"
            f"<td>{html.escape(str(s.get('first_as_of', '')))}</td>"
            f"<td>{html.escape(str(s.get('last_as_of', '')))}</td>"
            f"<td>{int(s.get('rows', 0)):,}</td><td>{_fmt(s.get('stations', ''))}</td>"
            f"<td>{'' if rate is None else f'{float(rate):.1%}'}</td>"
            f"<td>{'' if share is None else f'{float(share):.0%}'}</td>"
            f"<td>{html.escape('; '.join(flags)) or '–'}</td></tr>"
        )
    return f"<table>{head}{''.join(body)}</table>"


def _run_section(data: ReportData) -> str:
    """Which model was selected and why, the gate's verdict, the version and the dataset."""
    run = data.run
    items = []
    if run.get("selected"):
        me = " (this report)" if run["selected"] == data.candidate else ""
        items.append(
            f"<li><b>Selected:</b> {html.escape(str(run['selected']))}{me} — "
            f"{html.escape(str(run.get('why', '')))}</li>"
        )
    gate = run.get("gate")
    if isinstance(gate, Mapping):
        verdict = "passed" if gate.get("passed") else "failed"
        reasons = "; ".join(str(r) for r in gate.get("reasons", []))
        items.append(
            f"<li><b>Promotion gate:</b> <span class='{verdict}'>{verdict}</span>"
            f"{' — ' + html.escape(reasons) if reasons else ''}</li>"
        )
        for warning in gate.get("warnings", []):
            items.append(f"<li class=flag><b>Gate warning:</b> {html.escape(str(warning))}</li>")
    if run.get("version"):
        items.append(f"<li><b>Registered:</b> {html.escape(str(run['version']))}</li>")
    if run.get("dataset"):
        items.append(
            f"<li><b>Dataset:</b> {html.escape(str(run['dataset']))}, SHA-256"
            f" <code>{html.escape(str(run.get('dataset_hash', '')))}</code></li>"
        )
    flagged = [
        f"{name}: {'; '.join(str(f) for f in s.get('flags', []))}"
        for name, s in data.splits.items()
        if s.get("flags")
    ]
    if flagged:
        items.append(
            "<li class=flag><b>Check the splits:</b> "
            + html.escape(" · ".join(flagged))
            + " — its metrics describe that mix, not a typical week</li>"
        )
    return f"<ul class=run>{''.join(items)}</ul>" if items else ""


_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;"
    "text-align:right}td:first-child,th:first-child{text-align:left}"
    ".plots img{max-width:49%;vertical-align:top}"
    ".flag{background:#fff3cd}.passed{color:#1a7f37;font-weight:bold}"
    ".failed{color:#b42318;font-weight:bold}ul.run{line-height:1.6}.faint{color:#888}"
)


def write_report(out_dir: Path, data: ReportData) -> Path:
    """Write ``metrics.json`` and ``report.html`` into ``out_dir``; return ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = data.as_json()
    (out_dir / METRICS_FILE).write_text(
        json.dumps(payload, sort_keys=True, indent=2, allow_nan=False) + "\n", encoding="utf-8"
    )
    precision, recall = data.pr
    point = (float(data.test.get("recall", math.nan)), float(data.test.get("precision", math.nan)))
    images = [
        _reliability_plot(data.reliability),
        _pr_plot(precision, recall, point, data.pr_baselines, data.base_rate),
        _threshold_plot(data.threshold_curve, data.threshold),
    ]
    if data.importance:
        images.append(_importance_plot(data.importance))
    imgs = "".join(images)
    title = f"{data.candidate} — {data.label}"
    doc = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f"<p>{html.escape(data.kind)} candidate; primary metric "
        f"<b>{html.escape(data.primary_metric)}</b>.</p>"
        f"{_run_section(data)}"
        "<h2>Test split</h2>"
        f"{_table(data.test)}"
        "<h2>Lift over baselines (primary metric, &gt; 1 is better)</h2>"
        f"{_table(data.lift, ('baseline', 'lift'))}"
        "<h2>Validation split</h2>"
        f"{_table(data.validation)}"
        "<h2>Calibration and threshold</h2>"
        f"{_table({k: v for k, v in data.calibration.items() if k not in ('x', 'y')})}"
        f"{_table(data.threshold)}"
        f"<div class='plots'>{imgs}</div>"
        "<h2>Slices (test split)</h2>"
        f"{_slice_section(data.slices)}"
        "<h2>Parameters</h2>"
        f"{_table(data.params, ('parameter', 'value'))}"
        "<h2>Splits</h2>"
        f"{_split_table(data.splits)}"
        "</body></html>\n"
    )
    (out_dir / REPORT_FILE).write_text(doc, encoding="utf-8")
    return out_dir

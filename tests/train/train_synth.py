"""A small synthetic training set in the dataset layout (Parquet + DatasetMetadata).

Stations hold a bounded random walk of bikes; ``empty_next_hour`` is whether the walk touches
0 within the next hour, so the current count carries real signal and persistence is a
meaningful baseline.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dockline.core.contracts import DatasetMetadata, FileDigest
from dockline.core.files import sha256_file

T0 = datetime(2024, 5, 6, tzinfo=UTC)  # a Monday
STEP_US = 15 * 60 * 1_000_000
HORIZON_US = 60 * 60 * 1_000_000
FEATURES = [
    "num_bikes_available__last",
    "num_docks_available__last",
    "capacity__static",
    "is_renting__last",
    "is_returning__last",
    "hour_of_day",
    "day_of_week",
    "is_weekend",
    "noise",
]


def write_synthetic(
    root: Path,
    *,
    stations: int = 12,
    days: int = 4,
    seed: int = 0,
    name: str = "synth",
    label: str = "empty_next_hour",
    project: str | None = None,
    positions: Mapping[int, tuple[float, float]] | None = None,
    relabel: Callable[[int, dict[str, np.ndarray]], np.ndarray] | None = None,
) -> Path:
    """Write ``root/data.parquet`` and ``root/_metadata.json`` (built for ``label``); return
    ``root``.

    ``positions`` (station index → (lat, lon)) adds the ``lat__static``/``lon__static``
    features; ``relabel(station, columns)`` replaces a station's ``empty_next_hour`` (columns:
    ``bikes``, ``noise``, ``as_of``, ``label``, ``rng``'s draws in ``u``).
    """
    features = FEATURES + (["lat__static", "lon__static"] if positions is not None else [])
    rng = np.random.default_rng(seed)
    steps = days * 24 * 4
    start_us = int(T0.timestamp() * 1_000_000)
    horizon_steps = HORIZON_US // STEP_US
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ["station_id", "as_of", *features]}
    labels: dict[str, list[np.ndarray]] = {"empty_next_hour": [], "full_next_hour": []}
    for s in range(stations):
        cap = int(rng.integers(8, 30))
        # Drift towards empty for some stations so the label rate varies by station.
        drift = rng.normal(-0.3 if s % 3 == 0 else 0.0, 0.2)
        walk = np.empty(steps + horizon_steps, dtype=np.int64)
        walk[0] = cap // 2
        for t in range(1, walk.size):
            walk[t] = int(np.clip(walk[t - 1] + round(drift + rng.normal(0, 1.6)), 0, cap))
            if walk[t] == 0 and rng.random() < 0.3:  # rebalancing truck
                walk[t] = cap // 2
        bikes = walk[:steps]
        future_min = np.array([walk[t + 1 : t + 1 + horizon_steps].min() for t in range(steps)])
        future_max = np.array([walk[t + 1 : t + 1 + horizon_steps].max() for t in range(steps)])
        as_of = start_us + np.arange(steps, dtype=np.int64) * STEP_US
        hour = (as_of // 3_600_000_000) % 24
        dow = (as_of // 86_400_000_000 + 3) % 7  # 1970-01-01 was a Thursday (3)
        cols["station_id"].append(np.full(steps, f"s{s:03d}"))
        cols["as_of"].append(as_of)
        b = bikes.astype(np.float64)
        b[rng.random(steps) < 0.02] = np.nan  # the odd missing reading
        cols["num_bikes_available__last"].append(b)
        cols["num_docks_available__last"].append(cap - bikes.astype(np.float64))
        cols["capacity__static"].append(np.full(steps, float(cap)))
        cols["is_renting__last"].append(np.ones(steps))
        cols["is_returning__last"].append(np.ones(steps))
        cols["hour_of_day"].append(hour.astype(np.float64))
        cols["day_of_week"].append(dow.astype(np.float64))
        cols["is_weekend"].append((dow >= 5).astype(np.float64))
        noise = rng.normal(size=steps)
        cols["noise"].append(noise)
        empty_next = future_min == 0
        if positions is not None:
            cols["lat__static"].append(np.full(steps, positions[s][0]))
            cols["lon__static"].append(np.full(steps, positions[s][1]))
        if relabel is not None:
            columns = {"bikes": bikes, "noise": noise, "as_of": as_of, "label": empty_next}
            empty_next = relabel(s, columns | {"u": rng.random(steps)})
        labels["empty_next_hour"].append(empty_next)
        labels["full_next_hour"].append(future_max == cap)
    as_of_all = np.concatenate(cols["as_of"])
    arrays: dict[str, pa.Array] = {
        "station_id": pa.array(np.concatenate(cols["station_id"]).tolist(), pa.string()),
        "as_of": pa.array(as_of_all, pa.timestamp("us", tz="UTC")),
        "label_available_at": pa.array(as_of_all + HORIZON_US, pa.timestamp("us", tz="UTC")),
        "empty_next_hour": pa.array(np.concatenate(labels["empty_next_hour"])),
        "full_next_hour": pa.array(np.concatenate(labels["full_next_hour"])),
        "bikes_in_60m": pa.array(np.zeros(as_of_all.size)),
        "availability__as_of": pa.array(as_of_all, pa.timestamp("us", tz="UTC")),
    }
    for f in features:
        values = np.concatenate(cols[f])
        arrays[f] = pa.array(values, mask=np.isnan(values))
    table = pa.table(arrays)
    root.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, root / "data.parquet")
    digest = sha256_file(root / "data.parquet")
    DatasetMetadata(
        dataset_name=name,
        dataset_version=digest[:16],
        path=str(root),
        built_at=T0,
        row_count=table.num_rows,
        event_ts="as_of",
        columns=table.column_names,
        files=[
            FileDigest(
                path="data.parquet",
                rows=table.num_rows,
                bytes=(root / "data.parquet").stat().st_size,
                sha256=digest,
            )
        ],
        content_hash=digest,
        feature_count=len(features),
        target=label,
        extra={
            "label": label,
            **({"project": project} if project else {}),
            "horizon_us": HORIZON_US,
            "labels": "empty_next_hour,full_next_hour,bikes_in_60m",
            "plan_hash": "p" * 64,
            "features": ",".join(features),
        },
    ).write(root / "_metadata.json")
    return root

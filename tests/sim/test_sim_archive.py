"""The archive writer produces exactly the real Divvy layout and schema."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dockline.sim import CityConfig, FaultConfig, write_archive


def test_archive_matches_divvy_layout(tmp_path: Path, divvy_dir: Path) -> None:
    # Starts on a month boundary and crosses one, so rows must split by obs_ts month.
    config = CityConfig(
        stations=40, seed=2, start=datetime(2024, 4, 30, 22, tzinfo=UTC), faults=FaultConfig.all()
    )
    calls: list[tuple[int, int]] = []
    summary = write_archive(config, 0.5, tmp_path, progress=lambda d, t: calls.append((d, t)))
    status_files = sorted((tmp_path / "station_status").glob("*.parquet"))
    assert [f.name for f in status_files] == ["2024-04.parquet", "2024-05.parquet"]
    divvy_status = pq.read_schema(divvy_dir / "station_status" / "2013-07.parquet")
    divvy_info = pq.read_schema(divvy_dir / "station_information.parquet")
    for f in status_files:
        assert pq.read_schema(f).equals(divvy_status)
    info_path = tmp_path / "station_information.parquet"
    assert pq.read_schema(info_path).equals(divvy_info)
    assert summary.rows == 40 * 720 and calls[-1] == (720, 720)

    april, may = (pq.read_table(f) for f in status_files)
    assert pc.max(april["obs_ts"]).as_py() < datetime(2024, 5, 1, tzinfo=UTC)
    assert pc.min(may["obs_ts"]).as_py() >= datetime(2024, 5, 1, tzinfo=UTC)
    for table in (april, may):
        ids = table["station_id"].to_numpy(zero_copy_only=False)
        ts = table["obs_ts"].cast("int64").to_numpy()
        assert (ids[1:] >= ids[:-1]).all()  # sorted by station ...
        same = ids[1:] == ids[:-1]
        assert (ts[1:][same] > ts[:-1][same]).all()  # ... then time
        bikes = table["num_bikes_available"].to_numpy()
        docks = table["num_docks_available"].to_numpy()
        assert (bikes >= 0).all() and (docks >= 0).all()
        assert (bikes + docks <= table["capacity"].to_numpy()).all()
    info = pq.read_table(info_path)
    # no faults in an archive, but the live city's id scheme (numeric ids were switched on)
    assert info.num_rows == 40 and info["station_id"][0].as_py() == "1001"
    assert (info["snapshots"].to_numpy() == 720).all()
    per_station = np.unique(
        np.concatenate([t["station_id"].to_numpy(zero_copy_only=False) for t in (april, may)]),
        return_counts=True,
    )[1]
    assert (per_station == 720).all()

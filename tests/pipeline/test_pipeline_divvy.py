"""The real Divvy archive through the production path: exact row accounting, UTC timestamps."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from dockline.core.contracts import STATION_STATUS_SCHEMA, DatasetMetadata
from dockline.pipeline.ingest import ingest_archive, sink_offline
from dockline.pipeline.platform import Platform


def test_one_real_month_is_accounted_for_exactly(tmp_path: Path, divvy_dir: Path) -> None:
    archive = tmp_path / "divvy"
    (archive / "station_status").mkdir(parents=True)
    month = divvy_dir / "station_status" / "2013-07.parquet"
    os.symlink(month, archive / "station_status" / month.name)
    os.symlink(divvy_dir / "station_information.parquet", archive / "station_information.parquet")
    source_rows = pq.ParquetFile(month).metadata.num_rows

    platform = Platform.open(tmp_path / "data")
    summary = ingest_archive(platform, archive)
    assert summary.received == source_rows
    assert summary.accepted + summary.rejected == source_rows
    reports = sink_offline(platform)
    assert reports["station_status"].records == summary.accepted
    assert reports["station_information"].records == 304

    offline = platform.data.offline("station_status")
    first_file = next(offline.rglob("*.parquet"))
    schema = pq.read_schema(first_file)
    assert schema.field("event_ts").type == STATION_STATUS_SCHEMA.field("event_ts").type
    assert str(schema.field("event_ts").type.tz) == "UTC"
    with duckdb.connect() as con:
        rows, distinct, lo, hi = con.execute(
            "select count(*), count(distinct (station_id, event_ts)),"
            " min(epoch_us(event_ts)), max(epoch_us(event_ts)) from read_parquet(?)",
            [str(offline / "**" / "*.parquet")],
        ).fetchone() or (0, 0, 0, 0)
        source_lo, source_hi = con.execute(
            "select min(epoch_us(obs_ts)), max(epoch_us(obs_ts)) from read_parquet(?)", [str(month)]
        ).fetchone() or (0, 0)
    assert rows == distinct == summary.accepted
    assert (lo, hi) == (source_lo, source_hi), "timestamps must be the archive's instants, in UTC"

    manifests = sorted(offline.glob("date=*/_manifest.json"))
    assert manifests
    assert sum(DatasetMetadata.read(m).row_count for m in manifests) == rows

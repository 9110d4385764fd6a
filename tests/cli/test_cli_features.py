"""The feature commands end to end: archive → materialize → training set → consistency → heal."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
from test_cli_commands import assert_one_line_error, dockline, json_of

from dockline.core.contracts import DatasetMetadata


def test_feature_commands_on_a_simulated_archive(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    json_of(
        dockline(
            "sim", "archive", "--stations", "12", "--days", "1", "--out", str(archive), "--json"
        )
    )
    json_of(dockline("ingest", "--archive", str(archive), "--json", data_dir=tmp_path))

    materialized = json_of(dockline("features", "materialize", "--json", data_dir=tmp_path))
    assert materialized["entities"] == 12 and materialized["vectors"] > 0

    out = tmp_path / "ds"
    args = ["--label", "empty_next_hour", "--start", "2024-05-06T08:00:00", "--every", "15m"]
    meta = json_of(
        dockline(
            "dataset",
            "build",
            *args,
            "--end",
            "2024-05-06T20:00:00",
            "--out",
            str(out),
            "--json",
            data_dir=tmp_path,
        )
    )
    assert meta["row_count"] == 12 * 48
    assert DatasetMetadata.read(out / "_metadata.json").row_count == 12 * 48
    table = pq.read_table(out / "data.parquet")
    assert table.column_names[:3] == ["station_id", "as_of", "label_available_at"]
    assert "num_bikes_available__mean_15m" in table.column_names

    report = json_of(
        dockline("features", "consistency", "--sample", "200", "--json", data_dir=tmp_path)
    )
    assert report["points"] > 0
    assert report["overall_match_rate"] == 1.0

    healed = json_of(dockline("features", "heal", "--json", data_dir=tmp_path))
    assert healed["entities"] == 12

    bad = dockline(
        "dataset",
        "build",
        *args,
        "--end",
        "2024-05-06T20:00:00",
        "--out",
        str(out),
        "--label",
        "nope",
        data_dir=tmp_path,
    )
    assert_one_line_error(bad, "--label must be one of")


def test_feature_commands_without_data_say_what_to_do(tmp_path: Path) -> None:
    assert_one_line_error(
        dockline("features", "materialize", data_dir=tmp_path), "run `dockline ingest` first"
    )

"""The audit log (append-only Parquet by date) and `dockline decide log` over it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from decide_helpers import city
from typer.testing import CliRunner

from dockline.cli._decide import decide_app
from dockline.core.decisions import Decision, encode
from dockline.core.errors import ConfigError
from dockline.decide import decide
from dockline.decide.audit import AUDIT_SCHEMA, DecisionLog


def decisions() -> list[Decision]:
    """Cycles across a UTC midnight, two policies."""
    start = datetime(2024, 5, 6, 23, 30, tzinfo=UTC)  # 18:30 Chicago, still in service
    out = []
    for k in range(6):
        inputs = city(k, when=start + timedelta(minutes=15 * k))
        out.append(decide("predictive" if k % 2 else "reactive", inputs))
    return out


def test_append_read_partitions_and_idempotence(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "decisions")
    ds = decisions()
    assert log.append(ds[:3]) == 3
    assert log.append(ds[3:]) == 3
    days = sorted(p.name for p in (tmp_path / "decisions").iterdir())
    assert days == ["date=2024-05-06", "date=2024-05-07"]
    files = sorted((tmp_path / "decisions").rglob("*.parquet"))
    before = {f: f.read_bytes() for f in files}
    assert log.append(ds) == 0, "decisions already logged are not written again"
    for f, data in before.items():
        assert f.read_bytes() == data, "append-only: files are never rewritten"
    back = log.read()
    assert [encode(d) for d in back] == [encode(d) for d in ds], "whole records, once each"
    since = ds[2].cycle_time
    assert [d.decision_id for d in log.read(since=since)] == [d.decision_id for d in ds[2:]]
    table = pq.read_table(files[0])
    assert table.schema.equals(AUDIT_SCHEMA)
    row = table.to_pylist()[0]
    assert row["bundle_ids"] == ["b-abc"] or row["policy"] == "reactive"
    assert row["input_hash"] == ds[0].input_hash


def test_decide_log_cli_json_and_table(tmp_path: Path) -> None:
    ds = decisions()
    DecisionLog(tmp_path / "decisions").append(ds)
    runner = CliRunner()
    result = runner.invoke(decide_app, ["log", "--data-dir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    payload = orjson.loads(result.stdout)
    assert list(payload) == ["decisions"]
    assert [d["decision_id"] for d in payload["decisions"]] == [d.decision_id for d in ds]
    assert payload["decisions"][1] == orjson.loads(encode(ds[1]))
    since = ds[4].cycle_time.isoformat()
    result = runner.invoke(
        decide_app, ["log", "--data-dir", str(tmp_path), "--since", since, "--json"]
    )
    assert len(orjson.loads(result.stdout)["decisions"]) == 2
    table = runner.invoke(decide_app, ["log", "--data-dir", str(tmp_path)])
    assert table.exit_code == 0 and "6 decisions" in table.stdout
    bad = runner.invoke(decide_app, ["log", "--data-dir", str(tmp_path), "--since", "yesterday"])
    assert bad.exit_code != 0 and isinstance(bad.exception, ConfigError)
    empty = runner.invoke(decide_app, ["log", "--data-dir", str(tmp_path / "none"), "--json"])
    assert orjson.loads(empty.stdout) == {"decisions": []}


def test_a_corrupt_record_is_a_contract_error_naming_the_file(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path)
    log.append(decisions()[:1])
    (path,) = tmp_path.rglob("*.parquet")
    table = pq.read_table(path)
    record = table.column("record").to_pylist()[0].replace('"policy":"reactive"', '"policy":"x"')
    pq.write_table(table.set_column(14, "record", [[record]]), path)
    with pytest.raises(Exception, match=str(path.name)):
        log.read()

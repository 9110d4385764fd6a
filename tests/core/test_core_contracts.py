from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from dockline.core.config import DataDir, DocklineConfig, resolve_data_dir
from dockline.core.contracts import (
    DatasetMetadata,
    DeadLetter,
    IngestSummary,
    RejectReason,
    dead_letter_id,
)
from dockline.core.errors import (
    ConfigError,
    ContractError,
    DocklineError,
    NotFoundError,
    ValidationError,
)
from dockline.core.ports import stable_partition


def _meta(**overrides: object) -> DatasetMetadata:
    fields: dict[str, object] = {
        "dataset_name": "station_status",
        "dataset_version": "abc",
        "path": "offline/station_status/date=2024-01-01",
        "built_at": datetime(2024, 1, 2, tzinfo=UTC),
        "row_count": 10,
    }
    fields.update(overrides)
    return DatasetMetadata.model_validate(fields)


def test_contract_round_trip(tmp_path: Path) -> None:
    meta = _meta()
    meta.write(tmp_path / "_manifest.json")
    assert DatasetMetadata.read(tmp_path / "_manifest.json") == meta


def test_contract_rejects_unknown_fields_and_naive_times(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="extra"):
        _meta(surprise=1)
    with pytest.raises(ValueError, match="tz-aware"):
        _meta(built_at=datetime(2024, 1, 2))
    bad = tmp_path / "bad.json"
    bad.write_text('{"dataset_name": 3}')
    with pytest.raises(ContractError) as info:
        DatasetMetadata.read(bad)
    assert info.value.where == str(bad)
    with pytest.raises(ContractError, match="missing"):
        DatasetMetadata.read(tmp_path / "absent.json")


def test_errors_are_also_builtins() -> None:
    assert issubclass(ValidationError, ValueError)
    assert issubclass(ConfigError, ValueError)
    err = NotFoundError("station s1 is unknown", reason="unknown_entity")
    assert isinstance(err, KeyError)
    assert isinstance(err, DocklineError)
    assert str(err) == "station s1 is unknown"  # not quoted like a bare KeyError
    assert err.reason == "unknown_entity"


def test_dead_letter_ids_are_deterministic() -> None:
    a = dead_letter_id("feed", "doc-1", 3)
    assert a == dead_letter_id("feed", "doc-1", 3)
    assert a != dead_letter_id("feed", "doc-1", 4)
    assert a != dead_letter_id("feed", "doc-2", 3)


def test_ingest_summary_accounting() -> None:
    summary = IngestSummary(source="x", received=3, accepted=2)
    letter = DeadLetter(
        id="1",
        source="x",
        topic="station_status",
        reason=RejectReason.LATE,
        detail="late",
        raw=b"{}",
        ingested_at=datetime(2024, 1, 1, tzinfo=UTC),
    )
    summary.add_rejections([letter])
    summary.check_accounting()
    assert summary.dead_letters == {"late": 1}
    summary.received += 1
    with pytest.raises(ContractError, match="accounting"):
        summary.check_accounting()
    summary.unchanged += 1  # a quiet station's repeat is accounted for, not lost
    summary.check_accounting()


def test_stable_partition_is_stable_and_in_range() -> None:
    keys = pa.array([f"s{i}" for i in range(1000)] + ["s1"])
    parts = stable_partition(keys, 8)
    assert parts.min() >= 0 and parts.max() < 8
    assert parts[1] == parts[-1]
    # crc32 is fixed by the contract: another implementation must agree on these values
    assert stable_partition(pa.array(["a", "b", "17"]), 4).tolist() == [3, 1, 2]
    assert len(set(parts.tolist())) == 8


def test_config_load_and_errors(tmp_path: Path) -> None:
    assert DocklineConfig.load(None) == DocklineConfig()
    path = tmp_path / "dockline.toml"
    path.write_text('[ingest]\nallowed_lateness = "PT20M"\n[log]\npartitions = 2\n')
    config = DocklineConfig.load(path)
    assert config.log.partitions == 2
    assert config.ingest.allowed_lateness.total_seconds() == 1200
    path.write_text('[ingest]\nstale_after = "2d"\npublication_delay = 30\n')
    config = DocklineConfig.load(path)
    assert config.ingest.stale_after.total_seconds() == 2 * 86400
    assert config.ingest.publication_delay.total_seconds() == 30
    path.write_text('[ingest]\nstale_after = "soon"\n')
    with pytest.raises(ConfigError, match="stale_after"):
        DocklineConfig.load(path)
    path.write_text("[log]\npartitons = 2\n")
    with pytest.raises(ConfigError, match="partitons"):
        DocklineConfig.load(path)
    path.write_text("[log\n")
    with pytest.raises(ConfigError, match="TOML"):
        DocklineConfig.load(path)


def test_data_dir_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DOCKLINE_DATA_DIR", raising=False)
    assert resolve_data_dir() == Path(".dockline")
    monkeypatch.setenv("DOCKLINE_DATA_DIR", str(tmp_path))
    assert resolve_data_dir() == tmp_path
    assert resolve_data_dir("elsewhere") == Path("elsewhere")
    data = DataDir(tmp_path)
    assert data.offline("station_status") == tmp_path / "offline" / "station_status"
    assert data.serving_metrics == tmp_path / "serving" / "metrics"

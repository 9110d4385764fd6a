"""PostgreSQL CDC source against a real server: rows another system writes into ``station_status``
go through logical replication (wal2json) → validation → dead letters + log → offline store.

Restarts resume from the LSN committed with the last append: a reader killed mid-stream and
restarted, or a slot that was never told what was appended, neither loses nor duplicates rows.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import duckdb
import orjson
import pytest
import typer
from typer.testing import CliRunner

psycopg2 = pytest.importorskip("psycopg2")

from dockline.cli._cdc import cdc_app  # noqa: E402
from dockline.core.errors import ConfigError, SourceError  # noqa: E402
from dockline.ingest.cdc import already_appended, merge_marks  # noqa: E402
from dockline.pipeline.cdc import ingest_cdc  # noqa: E402
from dockline.pipeline.ingest import sink_offline  # noqa: E402
from dockline.pipeline.platform import Platform  # noqa: E402

TABLE_SQL = """
CREATE TABLE {name} (
    id bigserial PRIMARY KEY,
    station_id text,
    num_bikes_available integer,
    num_docks_available integer,
    last_reported timestamptz,
    is_renting boolean DEFAULT true
)
"""


class Db:
    """A fresh database per test: its own tables and slots."""

    def __init__(self, server: Any, name: str) -> None:
        self.server = server
        admin = psycopg2.connect(server.dsn())
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name}")
        admin.close()
        self.dsn = server.dsn(name)
        self.conn = psycopg2.connect(self.dsn)
        self.conn.autocommit = True

    def execute(self, sql: str, params: Any = None) -> None:
        with self.conn.cursor() as cur:
            cur.execute(sql, params)

    def insert(self, rows: list[tuple[Any, ...]]) -> None:
        """One transaction of (station_id, bikes, docks, last_reported) rows."""
        with self.conn.cursor() as cur:
            cur.execute("BEGIN")
            cur.executemany(
                "INSERT INTO station_status"
                " (station_id, num_bikes_available, num_docks_available, last_reported)"
                " VALUES (%s, %s, %s, %s)",
                rows,
            )
            cur.execute("COMMIT")

    def close(self) -> None:
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT slot_name FROM pg_replication_slots WHERE database = current_database()"
            )
            for (slot,) in cur.fetchall():
                cur.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        self.conn.close()


@pytest.fixture
def db(postgres: Any, request: pytest.FixtureRequest) -> Iterator[Db]:
    name = "cdc_" + request.node.name.replace("test_", "")[:40].lower()
    handle = Db(postgres, name)
    handle.execute(TABLE_SQL.format(name="station_status"))
    yield handle
    handle.close()


def _offline(platform: Platform) -> list[tuple[str, datetime, int]]:
    sink_offline(platform)
    pattern = str(platform.data.offline("station_status") / "**" / "*.parquet")
    return duckdb.execute(
        "SELECT station_id, event_ts, num_bikes_available FROM read_parquet(?)"
        " ORDER BY station_id, event_ts",
        [pattern],
    ).fetchall()


def _base() -> datetime:
    return datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def test_cdc_rows_validated_into_log_dead_letters_and_offline(db: Db, tmp_path: Path) -> None:
    platform = Platform.open(tmp_path / "data")
    # the first run creates the slot; nothing committed yet
    empty = ingest_cdc(platform, db.dsn, table="station_status", slot="s_main", once=True)
    assert empty.received == 0
    t0 = _base()
    db.insert([(f"st{i}", i, 10 - i, t0) for i in range(5)])
    db.insert(
        [
            ("st0", -3, 13, t0 + timedelta(minutes=1)),  # negative count
            ("st1", None, 9, t0 + timedelta(minutes=1)),  # missing bikes
            (None, 1, 1, t0 + timedelta(minutes=1)),  # missing station id
            ("st2", 2, 8, t0),  # same as st2's newest: unchanged
        ]
    )
    db.execute(
        "UPDATE station_status SET num_bikes_available = 7, last_reported = %s"
        " WHERE station_id = 'st4'",
        (t0 + timedelta(minutes=2),),
    )
    db.execute("DELETE FROM station_status WHERE station_id = 'st3'")  # not a record

    summary = ingest_cdc(platform, db.dsn, table="station_status", slot="s_main", once=True)

    assert summary.source == "cdc:s_main"
    assert summary.received == 10  # 5 + 4 + the updated row
    assert summary.accepted == 6
    assert summary.unchanged == 1
    assert summary.rejected == 3
    assert set(summary.dead_letters) >= {"negative_count", "missing_field"}
    summary.check_accounting()
    rows = _offline(platform)
    assert len(rows) == 6
    assert ("st4", t0 + timedelta(minutes=2), 7) in rows
    with platform.open_deadletters() as letters:
        assert sum(letters.counts(source="cdc:s_main").values()) == 3

    # nothing new: a second run reads nothing and adds nothing
    again = ingest_cdc(platform, db.dsn, table="station_status", slot="s_main", once=True)
    assert again.received == 0
    assert len(_offline(platform)) == 6


def test_cdc_resends_of_appended_transactions_are_skipped_by_lsn(db: Db, tmp_path: Path) -> None:
    """The crash between append and feedback: the server sends appended transactions again."""
    platform = Platform.open(tmp_path / "data")
    ingest_cdc(platform, db.dsn, table="station_status", slot="s_a", once=True)
    # a second slot, never confirmed: it replays everything slot s_a saw and confirmed
    ingest_cdc(platform, db.dsn, table="station_status", slot="s_b", source="other", once=True)
    t0 = _base()
    for minute in range(3):
        db.insert([(f"st{i}", minute + i, 20, t0 + timedelta(minutes=minute)) for i in range(4)])
    first = ingest_cdc(platform, db.dsn, table="station_status", slot="s_a", once=True)
    assert first.accepted == 12
    db.insert([("st9", 1, 1, t0)])

    # same source (same log resume point), but a slot that resends everything
    resent = ingest_cdc(
        platform, db.dsn, table="station_status", slot="s_b", source="cdc:s_a", once=True
    )
    assert resent.skipped_records == 12  # appended before: skipped, not duplicated
    assert resent.accepted == 1
    resent.check_accounting()
    assert len(_offline(platform)) == 13


def test_cdc_first_run_snapshots_rows_committed_before_the_slot_existed(
    db: Db, tmp_path: Path
) -> None:
    """Rows written before dockline ever ran come from the initial snapshot, then changes
    stream after its consistent point: nothing lost, nothing twice."""
    t0 = _base()
    db.insert([(f"st{i}", i, 10 - i, t0) for i in range(5)])
    db.insert([(f"st{i}", i + 1, 9 - i, t0 + timedelta(minutes=1)) for i in range(5)])
    db.insert([("st0", -1, 3, t0 + timedelta(minutes=2))])  # a dead letter, also in a snapshot
    platform = Platform.open(tmp_path / "data")

    first = ingest_cdc(platform, db.dsn, table="station_status", slot="s_snap", once=True)

    assert (first.received, first.accepted, first.rejected) == (11, 10, 1)
    assert first.to_dict()["snapshot_rows"] == 11
    first.check_accounting()
    assert len(_offline(platform)) == 10
    # later changes stream from the snapshot's consistent point on
    db.insert([("st1", 7, 3, t0 + timedelta(minutes=3)), ("st9", 1, 1, t0)])
    db.execute(
        "UPDATE station_status SET num_bikes_available = 8, last_reported = %s"
        " WHERE station_id = 'st4' AND last_reported = %s",
        (t0 + timedelta(minutes=4), t0 + timedelta(minutes=1)),
    )
    second = ingest_cdc(platform, db.dsn, table="station_status", slot="s_snap", once=True)
    assert (second.received, second.accepted, second.skipped_records) == (3, 3, 0)
    assert second.to_dict()["snapshot_rows"] == 0
    rows = _offline(platform)
    assert len(rows) == len(set(rows)) == 13
    assert ("st4", t0 + timedelta(minutes=4), 8) in rows
    with platform.open_deadletters() as letters:
        assert sum(letters.counts(source="cdc:s_snap").values()) == 1
    # nothing new: nothing read, nothing added
    third = ingest_cdc(platform, db.dsn, table="station_status", slot="s_snap", once=True)
    assert third.received == 0
    assert len(_offline(platform)) == 13


def test_snapshot_marks_cover_only_row_versions_the_earlier_snapshot_saw() -> None:
    marks = [(10, 5, 1_000)]
    assert already_appended(marks, (10, 5), 999)  # at the mark, older transaction
    assert already_appended(marks, (3, 40), 2)  # frozen
    assert not already_appended(marks, (10, 6), 999)  # after the mark
    assert not already_appended(marks, (2, 1), 1_000)  # a transaction the snapshot did not see
    # 32-bit wraparound: the horizon's epoch is ignored, order is modulo 2^32
    wrapped = [(10, 5, (1 << 32) + 5)]
    assert already_appended(wrapped, (1, 1), 4)
    assert already_appended(wrapped, (1, 1), 0xFFFFFFF0)  # just before the wrap
    assert not already_appended(wrapped, (1, 1), 6)
    # a later snapshot's mark replaces the ones at or below it
    assert merge_marks([(10, 5, 100), (50, 1, 90)], (20, 1, 200)) == [(50, 1, 90), (20, 1, 200)]
    assert merge_marks([(10, 5, 100)], (10, 5, 200)) == [(10, 5, 200)]


def test_resume_points_written_before_snapshot_marks_still_decode() -> None:
    """The resume state grew ``snapshot_marks``: old states decode, old readers ignore it."""
    import msgspec

    from dockline.pipeline.ingest import _Resume

    old = msgspec.msgpack.encode({"batches_done": 3, "newest_document": {}, "source_lsn": 42})
    resume = msgspec.msgpack.decode(old, type=_Resume)
    assert (resume.source_lsn, resume.snapshot_marks) == (42, [])
    resume.snapshot_marks = [(1, 2, 3)]
    again = msgspec.msgpack.decode(msgspec.msgpack.encode(resume), type=_Resume)
    assert again.snapshot_marks == [(1, 2, 3)]
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(resume))["source_lsn"] == 42


def test_cdc_snapshot_never_keeps_rows_before_the_slot_unseen(db: Db, tmp_path: Path) -> None:
    """``snapshot = "never"``: the slot is created without reading the table (the old way)."""
    t0 = _base()
    db.insert([(f"st{i}", i, 10 - i, t0) for i in range(4)])
    platform = Platform.open(tmp_path / "data")
    first = ingest_cdc(
        platform, db.dsn, table="station_status", slot="s_never", once=True, snapshot="never"
    )
    assert first.received == 0
    db.insert([("st1", 5, 5, t0 + timedelta(minutes=1))])
    second = ingest_cdc(
        platform, db.dsn, table="station_status", slot="s_never", once=True, snapshot="never"
    )
    assert (second.received, second.accepted) == (1, 1)
    assert len(_offline(platform)) == 1


def test_cdc_source_with_a_resume_point_never_snapshots_a_recreated_slot(
    db: Db, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Its rows are in the log already: a lost slot is recreated, loudly, without a snapshot."""
    t0 = _base()
    db.insert([("st1", 1, 9, t0)])
    platform = Platform.open(tmp_path / "data")
    first = ingest_cdc(platform, db.dsn, table="station_status", slot="s_lost", once=True)
    assert first.snapshot_rows == 1
    db.execute("SELECT pg_drop_replication_slot('s_lost')")
    db.insert([("st2", 2, 8, t0)])  # committed while no slot existed: not seen
    with caplog.at_level("WARNING", logger="dockline.pipeline.cdc"):
        again = ingest_cdc(platform, db.dsn, table="station_status", slot="s_lost", once=True)
    assert (again.received, again.snapshot_rows) == (0, 0)
    assert "created anew" in caplog.text
    db.insert([("st3", 3, 7, t0)])
    streamed = ingest_cdc(platform, db.dsn, table="station_status", slot="s_lost", once=True)
    assert (streamed.received, streamed.accepted) == (1, 1)


def test_cdc_rejects_a_table_without_the_status_columns(db: Db, tmp_path: Path) -> None:
    db.execute("CREATE TABLE other (station_id text, bikes integer)")
    platform = Platform.open(tmp_path / "data")
    with pytest.raises(ConfigError, match="lacks column"):
        ingest_cdc(platform, db.dsn, table="other", slot="s_x", once=True)
    with pytest.raises(ConfigError, match="does not exist"):
        ingest_cdc(platform, db.dsn, table="nope", slot="s_x", once=True)
    with pytest.raises(ConfigError, match="slot name"):
        ingest_cdc(platform, db.dsn, table="station_status", slot="s; DROP", once=True)


@contextmanager
def _reader(script: str, data: Path, dsn: str) -> Iterator[subprocess.Popen[str]]:
    """A reader process running ``script`` (it prints rows accepted so far); killed with
    SIGKILL and reaped when the block ends."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    reader = subprocess.Popen(
        [sys.executable, "-c", script, str(data), dsn], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        yield reader
    finally:
        reader.kill()
        reader.wait()
        if reader.stdout is not None:
            reader.stdout.close()


def _until_accepted(reader: subprocess.Popen[str], rows: int) -> None:
    """Return once ``reader`` reports at least ``rows`` accepted."""
    assert reader.stdout is not None
    for line in reader.stdout:
        if int(line) >= rows:
            return


READER = """
import sys, time
from dockline.pipeline.cdc import ingest_cdc
from dockline.pipeline.platform import Platform

def slow(summary):
    print(summary.accepted, flush=True)
    time.sleep(0.05)

ingest_cdc(Platform.open(sys.argv[1]), sys.argv[2], table="station_status", slot="s_kill",
           idle_timeout=60, on_progress=slow)
"""


@pytest.mark.slow
def test_cdc_reader_killed_mid_stream_resumes_without_loss_or_duplicates(
    db: Db, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    # one transaction per batch (5 rows): the kill lands between appends, mid-stream
    (data / "dockline.toml").write_text("[ingest]\nbatch_rows = 5\n", encoding="utf-8")
    platform = Platform.open(data)
    ingest_cdc(platform, db.dsn, table="station_status", slot="s_kill", once=True)
    t0 = _base()
    transactions, per = 60, 5
    with _reader(READER, data, db.dsn) as reader:
        for k in range(transactions):
            db.insert(
                [(f"st{i}", k % 7 + i, 30, t0 + timedelta(seconds=10 * k)) for i in range(per)]
            )
            time.sleep(0.01)
        _until_accepted(reader, 40)  # kill -9 (the block's end) once part of the stream is in
    resumed = ingest_cdc(platform, db.dsn, table="station_status", slot="s_kill", once=True)
    resumed.check_accounting()
    assert 0 < resumed.accepted < transactions * per  # killed mid-stream
    rows = _offline(platform)
    assert len(rows) == transactions * per
    assert len(set(rows)) == len(rows)


SNAPSHOT_READER = """
import sys, time
from dockline.pipeline.cdc import ingest_cdc
from dockline.pipeline.platform import Platform

def slow(summary):
    print(summary.accepted, flush=True)
    time.sleep(0.02)

ingest_cdc(Platform.open(sys.argv[1]), sys.argv[2], table="station_status", slot="s_ksnap",
           once=True, on_progress=slow)
"""


@pytest.mark.slow
def test_cdc_reader_killed_mid_snapshot_redoes_it_with_every_row_exactly_once(
    db: Db, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "dockline.toml").write_text("[ingest]\nbatch_rows = 500\n", encoding="utf-8")
    t0 = _base() - timedelta(hours=1)
    stations, times = 500, 100
    db.execute(
        "INSERT INTO station_status"
        " (station_id, num_bikes_available, num_docks_available, last_reported)"
        " SELECT 'st' || s, (k + s) %% 20, 20, %s::timestamptz + k * interval '10 seconds'"
        " FROM generate_series(0, %s) k, generate_series(0, %s) s ORDER BY k, s",
        (t0, times - 1, stations - 1),
    )
    with _reader(SNAPSHOT_READER, data, db.dsn) as reader:
        _until_accepted(reader, 15_000)  # kill -9 (the block's end) mid-snapshot
    platform = Platform.open(data)
    appended = len(_offline(platform))
    assert 15_000 <= appended < stations * times  # killed mid-snapshot
    # while no reader runs: an appended row is updated (a new event), new rows arrive
    db.execute(
        "UPDATE station_status SET num_bikes_available = 99, last_reported = %s"
        " WHERE station_id = 'st0' AND last_reported = %s",
        (t0 + timedelta(seconds=10 * times + 60), t0),
    )
    db.insert([(f"new{i}", 1, 1, t0) for i in range(5)])

    resumed = ingest_cdc(platform, db.dsn, table="station_status", slot="s_ksnap", once=True)

    resumed.check_accounting()
    total = stations * times + 5  # the update replaced a row version
    assert resumed.snapshot_rows == total
    assert resumed.skipped_records == appended - 1  # all but the updated row's old version
    assert resumed.accepted == total - appended + 1
    assert resumed.rejected == 0
    rows = _offline(platform)
    assert len(rows) == len(set(rows)) == stations * times + 1 + 5
    assert ("st0", t0 + timedelta(seconds=10 * times + 60), 99) in rows


cli_root = typer.Typer()


@cli_root.callback()
def _root(data_dir: Annotated[Path | None, typer.Option("--data-dir")] = None) -> None:
    """The root app's --data-dir, as dockline's root callback declares it."""


cli_root.add_typer(cdc_app, name="cdc")


def test_cli_cdc_ingest_reads_the_dsn_from_config_and_reports_json(db: Db, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "dockline.toml").write_text(
        f'[cdc]\ndsn = "{db.dsn}"\nslot = "s_cli"\n', encoding="utf-8"
    )
    runner = CliRunner()
    args = ["cdc", "ingest", "--data-dir", str(data), "--once", "--json"]
    first = runner.invoke(cli_root, args)
    assert first.exit_code == 0, first.output
    db.insert([("st1", 3, 7, _base()), ("st2", 99, -1, _base())])
    second = runner.invoke(cli_root, args)
    assert second.exit_code == 0, second.output
    report = orjson.loads(second.stdout)
    assert report["source"] == "cdc:s_cli"
    assert (report["received"], report["accepted"]) == (2, 1)
    assert report["offline_rows_written"]["station_status"] == 1


def test_cli_cdc_ingest_snapshot_flag_and_config(db: Db, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "dockline.toml").write_text(
        f'[cdc]\ndsn = "{db.dsn}"\nslot = "s_clisnap"\nsnapshot = "never"\n', encoding="utf-8"
    )
    db.insert([("st1", 3, 7, _base()), ("st2", 4, 6, _base())])
    runner = CliRunner()
    args = ["cdc", "ingest", "--data-dir", str(data), "--once", "--json"]
    never = runner.invoke(cli_root, args)  # [cdc] snapshot = "never": the rows are not seen
    assert never.exit_code == 0, never.output
    assert orjson.loads(never.stdout)["received"] == 0
    bad = runner.invoke(cli_root, [*args, "--snapshot", "sometimes"])
    assert isinstance(bad.exception, ConfigError)
    db.close()  # drops the slot: the flag overrides the config on a fresh source
    db.conn = psycopg2.connect(db.dsn)
    db.conn.autocommit = True
    initial = runner.invoke(cli_root, [*args, "--snapshot", "initial", "--source", "fresh"])
    assert initial.exit_code == 0, initial.output
    report = orjson.loads(initial.stdout)
    assert (report["received"], report["snapshot_rows"]) == (2, 2)
    text_args = ["cdc", "ingest", "--data-dir", str(data), "--once"]
    text = runner.invoke(
        cli_root,
        [*text_args, "--slot", "s_clitext"],
        env={"COLUMNS": "200"},
    )
    assert text.exit_code == 0, text.output
    assert "2 rows came from the initial snapshot" not in text.output  # [cdc] snapshot = never
    text = runner.invoke(
        cli_root,
        [*text_args, "--slot", "s_clitext2", "--snapshot", "initial"],
        env={"COLUMNS": "200"},
    )
    assert text.exit_code == 0, text.output
    assert "2 rows came from the initial snapshot" in text.output


def test_cli_cdc_ingest_without_a_dsn_is_a_config_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli_root, ["cdc", "ingest", "--data-dir", str(tmp_path), "--once"])
    assert isinstance(result.exception, ConfigError)
    assert "--dsn" in str(result.exception)


def test_cdc_unreachable_server_is_a_one_line_source_error(postgres: Any, tmp_path: Path) -> None:
    dead = f"host=127.0.0.1 port={postgres.port + 1 if postgres.port < 65535 else 1} user=x"
    with pytest.raises(SourceError, match="cannot connect to PostgreSQL") as caught:
        ingest_cdc(Platform.open(tmp_path / "data"), dead, once=True)
    assert "\n" not in str(caught.value)

"""Any working directory, any data dir, nothing created by mistake (issue 13).

Every command runs from a directory outside the checkout; a data dir knows its project; a
copied data dir is self-contained; reading commands refuse a missing or empty data dir.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from _run import ok_json, one_line_error, run

from dockline.train.registry import mlflow_client


def test_init_scaffolds_a_project_from_any_directory(tmp_path: Path) -> None:
    result = run("init", "my-city", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "my-city" / "project.py").read_text()
    assert 'name="bikeshare"' in text
    one_line_error(run("init", "my-city", cwd=tmp_path), 2, "already exists")


def test_feature_commands_work_outside_the_checkout(filled_data_dir: Path, tmp_path: Path) -> None:
    # The shared data dir was ingested and materialized from a temp dir already; these read it.
    data = str(filled_data_dir)
    report = ok_json(
        run("features", "consistency", "--sample", "50", "--data-dir", data, "--json", cwd=tmp_path)
    )
    assert report["points"] > 0
    out = tmp_path / "ds"
    meta = ok_json(
        run(
            "dataset", "build", "--label", "empty_next_hour", "--start", "2024-05-06T08:00:00",
            "--end", "2024-05-06T10:00:00", "--every", "30m", "--out", str(out),
            "--data-dir", data, "--json", cwd=tmp_path,
        )
    )  # fmt: skip
    assert meta["row_count"] == 12 * 4


def test_the_data_dir_records_the_project_it_was_given(data_copy: Path, tmp_path: Path) -> None:
    assert run("init", "proj", cwd=tmp_path).returncode == 0
    project = tmp_path / "proj"
    source = project / "project.py"
    source.write_text(source.read_text().replace('name="bikeshare"', 'name="mycity"'))
    first = run(
        "features", "materialize", "--project", "proj", "--data-dir", str(data_copy), cwd=tmp_path
    )
    assert first.returncode == 0, first.stderr
    assert str(project.resolve()) in (data_copy / "dockline.toml").read_text()
    # From elsewhere, without --project: the data dir's own project, not the example.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for state in (data_copy / "online-state").glob("mycity-*"):
        state.unlink()
    again = run("features", "materialize", "--data-dir", str(data_copy), "--json", cwd=elsewhere)
    assert again.returncode == 0, again.stderr
    assert list((data_copy / "online-state").glob("mycity-*.msgpack"))
    shown = ok_json(run("config", "show", "--data-dir", str(data_copy), "--json", cwd=elsewhere))
    setting = {row["key"]: row for row in shown["settings"]}["features.project"]
    assert setting == {"key": "features.project", "value": str(project.resolve()), "source": "file"}


def _locations(db: Path) -> list[str]:
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT artifact_location FROM experiments WHERE name = 'm'").fetchall()
        rows += con.execute("SELECT artifact_uri FROM runs").fetchall()
    return [str(row[0]) for row in rows]


@pytest.mark.slow  # MLflow's store migrations and imports: ~15 s here
def test_a_copied_data_dir_keeps_its_mlflow_artifacts_to_itself(tmp_path: Path) -> None:
    original = tmp_path / "original"
    (original / "mlruns").mkdir(parents=True)
    db = original / "mlruns" / "mlflow.db"
    client = mlflow_client(f"sqlite:///{db}")
    location = (original / "mlruns" / "artifacts" / "m").resolve().as_uri()
    experiment = client.create_experiment("m", artifact_location=location)
    client.create_run(experiment)
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)

    listed = ok_json(run("models", "list", "--data-dir", str(copy), "--json", cwd=tmp_path))
    assert listed == {"models": []}
    moved = _locations(copy / "mlruns" / "mlflow.db")
    assert len(moved) == 2
    assert all(loc.startswith((copy / "mlruns" / "artifacts").resolve().as_uri()) for loc in moved)
    # A new run in the copy writes its artifacts into the copy, not into the original.
    client = mlflow_client(f"sqlite:///{copy / 'mlruns' / 'mlflow.db'}")
    run_id = client.create_run(experiment).info.run_id
    note = tmp_path / "note.txt"
    note.write_text("hello")
    client.log_artifact(run_id, str(note))
    assert list((copy / "mlruns" / "artifacts").rglob("note.txt"))
    assert not (original / "mlruns" / "artifacts").exists()


@pytest.mark.parametrize(
    "args",
    [
        ("models", "list"),
        ("deadletters",),
        ("features", "materialize"),
        ("serve", "--port", "9"),
        ("models", "history", "some-model"),
    ],
)
def test_reading_commands_refuse_a_missing_data_dir(tmp_path: Path, args: tuple[str, ...]) -> None:
    one_line_error(run(*args, cwd=tmp_path), 2, ".dockline", "no such data dir")
    assert not (tmp_path / ".dockline").exists()
    typo = tmp_path / "dat"
    one_line_error(run("--data-dir", str(typo), *args, cwd=tmp_path), 2, str(typo))
    assert not typo.exists()


def test_reading_commands_refuse_a_directory_without_dockline_state(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    one_line_error(
        run("models", "list", "--data-dir", "empty", cwd=tmp_path), 2, "not a dockline data dir"
    )
    assert list((tmp_path / "empty").iterdir()) == []


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (("dataset", "build", "--label", "x", "--start", "2024-05-06", "--end", "2024-05-07",
          "--out", "ds", "--every", "5"), "--every"),
        (("ingest", "--feed", "http://127.0.0.1:9/gbfs.json", "--duration", "10"), "--duration"),
        (("features", "materialize", "--follow", "--duration", "2"), "--duration"),
        (("sim", "serve", "--duration", "3", "--port", "0"), "--duration"),
    ],
)  # fmt: skip
def test_durations_need_a_unit(
    filled_data_dir: Path, tmp_path: Path, args: tuple[str, ...], option: str
) -> None:
    number = args[-1] if args[-1] != "0" else args[-3]
    one_line_error(
        run(*args, "--data-dir", str(filled_data_dir), cwd=tmp_path)
        if args[0] != "sim"
        else run(*args, cwd=tmp_path),
        2,
        option,
        f"{number}s? {number}m?",
    )


def test_an_unknown_filter_value_lists_the_valid_ones(
    filled_data_dir: Path, tmp_path: Path
) -> None:
    result = run("deadletters", "--reason", "lat", "--data-dir", str(filled_data_dir), cwd=tmp_path)
    line = one_line_error(result, 2, "--reason", "'lat'")
    for valid in ("late", "stale", "duplicate", "missing_field"):
        assert valid in line


def test_a_data_dir_moves_with_the_project_inside_it(data_copy: Path, tmp_path: Path) -> None:
    assert run("init", str(data_copy / "proj"), cwd=tmp_path).returncode == 0
    source = data_copy / "proj" / "project.py"
    source.write_text(source.read_text().replace('name="bikeshare"', 'name="inside"'))
    first = run(
        "features", "materialize", "--project", str(data_copy / "proj"), "--data-dir",
        str(data_copy), cwd=tmp_path,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert 'project = "proj"' in (data_copy / "dockline.toml").read_text()
    moved = tmp_path / "moved"
    data_copy.rename(moved)
    again = run("features", "heal", "--data-dir", "moved", "--json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    shown = ok_json(run("config", "show", "--data-dir", "moved", "--json", cwd=tmp_path))
    assert {r["key"]: r["value"] for r in shown["settings"]}["features.project"] == "proj"


def test_serve_takes_a_project(filled_data_dir: Path, tmp_path: Path) -> None:
    result = run(
        "serve", "--project", "no-such-project", "--data-dir", str(filled_data_dir), cwd=tmp_path
    )
    one_line_error(result, 2, "no-such-project", "project not found")
    assert not (filled_data_dir / "dockline.toml").exists()  # a missing project is not recorded

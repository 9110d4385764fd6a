"""The definitions API and the compiler: a valid project compiles to a stable plan; invalid
definitions fail at load with a message naming the definition."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockline.core.errors import ConfigError, UserCodeError
from dockline.features import (
    Derived,
    Entity,
    FeatureGroup,
    Neighbourhood,
    Plan,
    Project,
    Source,
    col,
    compile_project,
    count,
    count_if,
    delta,
    future_any,
    last,
    load_project,
    mean,
    time_since,
)

REPO = Path(__file__).resolve().parents[2]
station = Entity("station", key="station_id")
status = Source(
    "station_status",
    entity=station,
    columns=("station_id", "event_ts", "ingested_at", "bikes", "docks"),
)


def _project(**overrides: object) -> Project:
    fields: dict[str, object] = {
        "name": "t",
        "entity": station,
        "groups": [
            FeatureGroup("g", source=status, features=[last("bikes"), mean("bikes", "15m")])
        ],
    }
    fields.update(overrides)
    return Project(**fields)  # type: ignore[arg-type]


def test_bikeshare_compiles_with_the_designed_names() -> None:
    plan = compile_project(load_project(REPO / "examples" / "bikeshare"))
    names = plan.feature_names
    for expected in (
        "num_bikes_available__last",
        "num_bikes_available__mean_15m",
        "num_bikes_available__delta_60m",
        "empty_snapshots_60m",
        "minutes_since_empty",
        "hour_of_day",
        "fill_how_28d",
        "neighbour_fill_k5",
        "fill_ratio",
    ):
        assert expected in names
    assert plan.label_names == ("empty_next_hour", "full_next_hour", "bikes_in_60m")
    assert plan.groups[0].as_of_column == "availability__as_of"


def test_plan_hash_is_stable_and_sensitive() -> None:
    a = compile_project(_project())
    assert a.hash == compile_project(_project()).hash
    assert Plan.from_json(a.to_json()) == a
    other = _project(groups=[FeatureGroup("g", source=status, ttl="2h", features=[last("bikes")])])
    assert compile_project(other).hash != a.hash


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"groups": []}, "no feature group"),
        ({"groups": [FeatureGroup("g", source=status, features=[last("nope")])]}, "nope"),
        (
            {"groups": [FeatureGroup("g", source=status, features=[mean("bikes", "0m")])]},
            "window must be > 0",
        ),
        (
            {"groups": [FeatureGroup("g", source=status, features=[mean("bikes", "soon")])]},
            "feature group 'g'",
        ),
        (
            {"groups": [FeatureGroup("g", source=status, ttl="-1h", features=[last("bikes")])]},
            "ttl",
        ),
        (
            {
                "groups": [
                    FeatureGroup(
                        "g", source=status, features=[count_if(col("bikes"), "1h", name="x")]
                    )
                ]
            },
            "needs a predicate",
        ),
        (
            {"groups": [FeatureGroup("g", source=status, features=[last("bikes"), last("bikes")])]},
            "names used twice",
        ),
        (
            {"derived": [Derived("ratio", col("bikes__last") / col("unknown"))]},
            "derived feature 'ratio'",
        ),
        (
            {"labels": [future_any(col("bikes") == 0, "0m", name="empty", source=status)]},
            "label 'empty' horizon",
        ),
        ({"derived": [Derived("as_of", col("bikes__last"))]}, "reserved"),
    ],
)
def test_invalid_definitions_name_what_is_wrong(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        compile_project(_project(**overrides))


def test_feature_names_follow_the_convention() -> None:
    group = FeatureGroup(
        "g",
        source=status,
        features=[
            delta("bikes", "60m"),
            count("90s"),
            mean("bikes", "1d"),
            time_since(col("bikes") == 0, name="since_empty"),
        ],
    )
    plan = compile_project(_project(groups=[group]))
    assert plan.feature_names == (
        "bikes__delta_60m",
        "events__count_90s",
        "bikes__mean_1d",
        "since_empty",
    )


def test_neighbourhood_must_name_an_existing_feature() -> None:
    hood = Neighbourhood("n", feature="missing", k=3, locations=status)
    with pytest.raises(ConfigError, match="neighbourhood 'n'"):
        compile_project(_project(neighbourhoods=[hood]))


def test_neighbourhood_cannot_average_a_batch_feature() -> None:
    places = Source("station_information", entity=station)
    hoods = [
        Neighbourhood("n1", feature="g_half", k=3, locations=places),
        Neighbourhood("n2", feature="uses_n1", k=3, locations=places),
    ]
    derived = [Derived("g_half", col("bikes__last") / 2), Derived("uses_n1", col("n1") * 2)]
    with pytest.raises(ConfigError, match=r"neighbourhood 'n2'.*depends on batch"):
        compile_project(_project(neighbourhoods=hoods, derived=derived))


def test_expressions_refuse_python_truthiness() -> None:
    with pytest.raises(ConfigError, match=r"& \| ~"):
        bool(col("a") == 0)


def test_load_project_reports_user_errors(tmp_path: Path) -> None:
    (tmp_path / "project.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(UserCodeError, match="boom") as info:
        load_project(tmp_path)
    assert info.value.where is not None and "project.py" in info.value.where
    (tmp_path / "project.py").write_text("x = 1\n")
    with pytest.raises(ConfigError, match="project = Project"):
        load_project(tmp_path)
    with pytest.raises(ConfigError, match="not found"):
        load_project(tmp_path / "nowhere")

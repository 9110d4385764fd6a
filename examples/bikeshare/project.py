"""The bike-share reference project: features and labels for station availability.

Predict, for each station and time t, whether it will be empty (or full) within the next hour.
Load it with ``dockline.features.load_project("examples/bikeshare")``.
"""

from dockline.core.contracts import STATION_INFORMATION_SCHEMA, STATION_STATUS_SCHEMA
from dockline.features import (
    Calendar,
    Derived,
    Entity,
    FeatureGroup,
    HourOfWeekProfile,
    Neighbourhood,
    Project,
    Source,
    Static,
    col,
    count,
    count_if,
    delta,
    future_any,
    future_value,
    last,
    max_,
    mean,
    min_,
    stddev,
    time_since,
)

TZ = "America/Chicago"

station = Entity("station", key="station_id")
status = Source(
    "station_status",
    entity=station,
    tz=TZ,
    allowed_lateness="10m",
    columns=tuple(STATION_STATUS_SCHEMA.names),
)
information = Source(
    "station_information", entity=station, tz=TZ, columns=tuple(STATION_INFORMATION_SCHEMA.names)
)

bikes = "num_bikes_available"
empty = (col(bikes) == 0) & col("is_renting")
full = (col("num_docks_available") == 0) & col("is_returning")

availability = FeatureGroup(
    "availability",
    source=status,
    ttl="2h",
    features=[
        last(bikes),
        last("num_docks_available"),
        last("capacity"),
        last("is_renting"),
        last("is_returning"),
        mean(bikes, "15m"),
        min_(bikes, "15m"),
        max_(bikes, "15m"),
        delta(bikes, "15m"),
        mean(bikes, "60m"),
        min_(bikes, "60m"),
        max_(bikes, "60m"),
        delta(bikes, "60m"),
        stddev(bikes, "60m"),
        count("60m"),
        count_if(empty, "60m", name="empty_snapshots_60m"),
        count_if(full, "60m", name="full_snapshots_60m"),
        time_since(empty, name="minutes_since_empty"),
        time_since(full, name="minutes_since_full"),
    ],
)

project = Project(
    name="bikeshare",
    entity=station,
    groups=[availability],
    static=Static(information, columns=("lat", "lon", "capacity")),
    calendar=Calendar(tz=TZ),
    profiles=[
        HourOfWeekProfile(
            "fill_how_28d",
            source=status,
            value=col(bikes) / col("capacity"),
            lookback="28d",
            every="1d",
            lag="1h",
        )
    ],
    neighbourhoods=[
        Neighbourhood("neighbour_fill_k5", feature="fill_ratio", k=5, locations=information)
    ],
    derived=[
        Derived("fill_ratio", col("num_bikes_available__last") / col("capacity__last")),
        Derived(
            "neighbour_fill_gap", col("fill_ratio") - col("neighbour_fill_k5")
        ),
    ],
    labels=[
        future_any(empty, "60m", name="empty_next_hour", source=status),
        future_any(full, "60m", name="full_next_hour", source=status),
        future_value(bikes, "60m", name="bikes_in_60m", source=status),
    ],
)

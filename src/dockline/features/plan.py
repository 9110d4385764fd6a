"""Compile a project's definitions into one validated, hashable plan.

The plan is the contract between the definitions and both executors: the offline executor
renders it as SQL, the online executor as incremental per-entity state; neither reads the
definitions. Its SHA-256 (``Plan.hash``) goes into dataset metadata and lineage.

Invalid definitions fail here, at load, with a message naming the definition and what is wrong.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

import msgspec
import pyarrow as pa

from dockline.core.errors import ConfigError, UserCodeError, ValidationError
from dockline.features.definitions import (
    AggOp,
    Aggregation,
    FeatureGroup,
    Label,
    Project,
    Source,
    duration,
    window_suffix,
)
from dockline.features.expr import Expr

__all__ = [
    "AggSpec",
    "BatchProvider",
    "CalendarSpec",
    "DerivedSpec",
    "GroupSpec",
    "LabelSpec",
    "NeighbourSpec",
    "Plan",
    "ProfileSpec",
    "SourceSpec",
    "StaticSpec",
    "compile_project",
    "load_project",
]

US = 1_000_000
_UNIT_US = {"seconds": US, "minutes": 60 * US, "hours": 3600 * US}
RESERVED = frozenset({"as_of", "label_available_at"})


BatchProvider = Callable[[int], Mapping[str, pa.Table]]
"""``run_us -> {batch feature name: table}``: the results of one batch run (what
``OfflineExecutor.batch_run`` returns — profiles as key + ``h000``..``h167``, neighbourhoods as
key + ``value``). The online executor takes one so both sides use the very same runs."""


class _Spec(msgspec.Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=True):
    pass


class SourceSpec(_Spec, frozen=True):
    """A source: where its events live and which columns carry the entity and the two times."""

    name: str
    table: str
    key: str
    event_ts: str
    ingested_at: str
    tz: str
    allowed_lateness_us: int


class AggSpec(_Spec, frozen=True):
    """One aggregation; ``name`` is its output column. All features are DOUBLE."""

    name: str
    op: AggOp
    column: str | None = None
    window_us: int | None = None
    predicate: Expr | None = None
    unit_us: int = 60 * US  # time_since's unit


class GroupSpec(_Spec, frozen=True):
    """Aggregations over one source; values null when the newest event is older than ``ttl``."""

    name: str
    source: str
    ttl_us: int
    aggs: tuple[AggSpec, ...]

    @property
    def as_of_column(self) -> str:
        """``<group>__as_of``: event time of the newest event the group used."""
        return f"{self.name}__as_of"

    @property
    def horizon_us(self) -> int:
        """How far back the group ever looks from t (longest window, or the TTL)."""
        windows = [a.window_us for a in self.aggs if a.window_us is not None]
        return max([self.ttl_us, *windows])


class DerivedSpec(_Spec, frozen=True):
    """A row-level feature over other features."""

    name: str
    expr: Expr


class CalendarSpec(_Spec, frozen=True):
    """Calendar features of t in ``tz``."""

    tz: str
    features: tuple[str, ...]


class StaticSpec(_Spec, frozen=True):
    """Entity attributes from an information source, as known at t."""

    source: str
    columns: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """Output columns: ``<column>__static``."""
        return tuple(f"{c}__static" for c in self.columns)


class ProfileSpec(_Spec, frozen=True):
    """Hour-of-week profile (a batch feature)."""

    name: str
    source: str
    value: Expr
    lookback_us: int
    every_us: int
    lag_us: int


class NeighbourSpec(_Spec, frozen=True):
    """Mean of a feature over the k nearest entities (a batch feature)."""

    name: str
    feature: str
    k: int
    locations: str
    lat: str
    lon: str
    every_us: int
    lag_us: int


class LabelSpec(_Spec, frozen=True):
    """A forward-looking label."""

    name: str
    op: Literal["future_any", "future_value"]
    source: str
    horizon_us: int
    predicate: Expr | None = None
    column: str | None = None


class Plan(_Spec, frozen=True):
    """The compiled project. ``feature_names`` is the serving vector's order."""

    project: str
    entity: str
    key: str
    sources: tuple[SourceSpec, ...]
    groups: tuple[GroupSpec, ...]
    labels: tuple[LabelSpec, ...] = ()
    derived: tuple[DerivedSpec, ...] = ()
    calendar: CalendarSpec | None = None
    static: StaticSpec | None = None
    profiles: tuple[ProfileSpec, ...] = ()
    neighbourhoods: tuple[NeighbourSpec, ...] = ()
    version: int = 1

    def source(self, name: str) -> SourceSpec:
        """The source called ``name``."""
        for spec in self.sources:
            if spec.name == name:
                return spec
        raise ConfigError(f"plan has no source {name!r}")

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Features in vector order: groups, static, calendar, profiles, neighbours, derived."""
        names: list[str] = [a.name for g in self.groups for a in g.aggs]
        if self.static is not None:
            names += self.static.names
        if self.calendar is not None:
            names += self.calendar.features
        names += [p.name for p in self.profiles]
        names += [n.name for n in self.neighbourhoods]
        names += [d.name for d in self.derived]
        return tuple(names)

    @property
    def label_names(self) -> tuple[str, ...]:
        """Label columns, in declaration order."""
        return tuple(label.name for label in self.labels)

    def to_json(self) -> bytes:
        """Canonical JSON (the bytes the hash is computed over)."""
        return msgspec.json.encode(self)

    @property
    def hash(self) -> str:
        """SHA-256 of the canonical JSON: same definitions ⇒ same hash."""
        return hashlib.sha256(self.to_json()).hexdigest()

    @classmethod
    def from_json(cls, data: bytes) -> Plan:
        """Read a plan written by :meth:`to_json`."""
        return msgspec.json.decode(data, type=cls)


def _us(value: timedelta) -> int:
    return int(value / timedelta(microseconds=1))


def _positive(value: object, what: str) -> int:
    try:
        us = _us(duration(value))  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(f"{what}: {exc.message}") from None
    if us <= 0:
        raise ConfigError(f"{what} must be > 0; got {value!r}")
    return us


def _non_negative(value: object, what: str) -> int:
    try:
        return _us(duration(value))  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(f"{what}: {exc.message}") from None


def _check_tz(tz: str, where: str) -> str:
    try:
        ZoneInfo(tz)
    except Exception:  # ZoneInfoNotFoundError or ValueError for malformed keys
        raise ConfigError(f"{where}: tz must be an IANA time zone; got {tz!r}") from None
    return tz


def _check_columns(source: Source, columns: Iterable[str], where: str) -> None:
    if source.columns is None:
        return
    unknown = sorted(set(columns) - set(source.columns))
    if unknown:
        raise ConfigError(
            f"{where}: column(s) {unknown} are not in source {source.name!r}"
            f" (it has {list(source.columns)})"
        )


def _source_spec(source: Source) -> SourceSpec:
    where = f"source {source.name!r}"
    return SourceSpec(
        name=source.name,
        table=source.table or source.name,
        key=source.entity.key,
        event_ts=source.event_ts,
        ingested_at=source.ingested_at,
        tz=_check_tz(source.tz, where),
        allowed_lateness_us=_non_negative(source.allowed_lateness, f"{where} allowed_lateness"),
    )


def _agg_spec(agg: Aggregation, group: FeatureGroup) -> AggSpec:
    where = f"feature group {group.name!r}"
    needs_column = agg.op in ("last", "mean", "min", "max", "sum", "stddev", "delta")
    needs_window = agg.op not in ("last", "time_since")
    if needs_column and not agg.column:
        raise ConfigError(f"{where}: {agg.op}() needs a column")
    if agg.op in ("count_if", "time_since"):
        if agg.predicate is None or not agg.predicate.is_predicate:
            raise ConfigError(
                f"{where}: {agg.op}() needs a predicate such as col('x') == 0;"
                f" got {agg.predicate!r}"
            )
        if not agg.name:
            raise ConfigError(f"{where}: {agg.op}() needs a name")
    window_us = _positive(agg.window, f"{where} {agg.op}() window") if needs_window else None
    if agg.name:
        name = agg.name
    elif agg.op == "count":
        name = f"events__count_{window_suffix(timedelta(microseconds=window_us or 0))}"
    elif window_us is None:
        name = f"{agg.column}__{agg.op}"
    else:
        name = f"{agg.column}__{agg.op}_{window_suffix(timedelta(microseconds=window_us))}"
    read = set(agg.predicate.columns() if agg.predicate is not None else ())
    if agg.column:
        read.add(agg.column)
    _check_columns(group.source, read, f"{where} feature {name!r}")
    if agg.unit not in _UNIT_US:
        raise ConfigError(f"{where} feature {name!r}: unit must be one of {sorted(_UNIT_US)}")
    return AggSpec(
        name=name,
        op=agg.op,
        column=agg.column,
        window_us=window_us,
        predicate=agg.predicate,
        unit_us=_UNIT_US[agg.unit],
    )


def _label_spec(label: Label) -> LabelSpec:
    where = f"label {label.name!r}"
    horizon = _positive(label.horizon, f"{where} horizon")
    if label.op == "future_any":
        if label.predicate is None or not label.predicate.is_predicate:
            raise ConfigError(f"{where}: future_any() needs a predicate; got {label.predicate!r}")
        _check_columns(label.source, label.predicate.columns(), where)
    elif not label.column:
        raise ConfigError(f"{where}: future_value() needs a column")
    else:
        _check_columns(label.source, [label.column], where)
    return LabelSpec(
        name=label.name,
        op=label.op,
        source=label.source.name,
        horizon_us=horizon,
        predicate=label.predicate,
        column=label.column,
    )


def _derived_closure(project: Project, name: str) -> set[str]:
    """Every feature ``name`` depends on through derived features (including itself)."""
    by_name = {d.name: d for d in project.derived}
    todo, out = [name], set()
    while todo:
        current = todo.pop()
        if current in out:
            continue
        out.add(current)
        if current in by_name:
            todo.extend(by_name[current].expr.columns())
    return out


def compile_project(project: Project) -> Plan:
    """Validate ``project`` and compile it into a :class:`Plan`.

    Raises :class:`~dockline.core.errors.ConfigError` naming the offending definition.
    """
    if not project.groups:
        raise ConfigError(f"project {project.name!r} declares no feature group")
    sources: dict[str, Source] = {}

    def remember(source: Source, where: str) -> None:
        if source.entity != project.entity:
            raise ConfigError(
                f"{where}: source {source.name!r} is keyed by entity {source.entity.name!r},"
                f" not the project's {project.entity.name!r}"
            )
        known = sources.setdefault(source.name, source)
        if known != source:
            raise ConfigError(f"{where}: two different sources are called {source.name!r}")

    groups: list[GroupSpec] = []
    for group in project.groups:
        remember(group.source, f"feature group {group.name!r}")
        if not group.features:
            raise ConfigError(f"feature group {group.name!r} has no features")
        groups.append(
            GroupSpec(
                name=group.name,
                source=group.source.name,
                ttl_us=_positive(group.ttl, f"feature group {group.name!r} ttl"),
                aggs=tuple(_agg_spec(agg, group) for agg in group.features),
            )
        )
    static = None
    if project.static is not None:
        remember(project.static.source, "static attributes")
        _check_columns(project.static.source, project.static.columns, "static attributes")
        static = StaticSpec(
            source=project.static.source.name, columns=tuple(project.static.columns)
        )
    calendar = None
    if project.calendar is not None:
        allowed = {"hour_of_day", "day_of_week", "is_weekend", "minute_of_day"}
        bad = sorted(set(project.calendar.features) - allowed)
        if bad:
            raise ConfigError(f"calendar: unknown feature(s) {bad}; allowed {sorted(allowed)}")
        calendar = CalendarSpec(
            tz=_check_tz(project.calendar.tz, "calendar"), features=tuple(project.calendar.features)
        )
    profiles = []
    for profile in project.profiles:
        where = f"profile {profile.name!r}"
        remember(profile.source, where)
        _check_columns(profile.source, profile.value.columns(), where)
        profiles.append(
            ProfileSpec(
                name=profile.name,
                source=profile.source.name,
                value=profile.value,
                lookback_us=_positive(profile.lookback, f"{where} lookback"),
                every_us=_positive(profile.every, f"{where} every"),
                lag_us=_non_negative(profile.lag, f"{where} lag"),
            )
        )
    labels = []
    for label in project.labels:
        remember(label.source, f"label {label.name!r}")
        labels.append(_label_spec(label))

    # names: unique, not reserved, and derived/neighbourhood references resolve in order
    seen: list[str] = [a.name for g in groups for a in g.aggs]
    seen += list(static.names) if static else []
    seen += list(calendar.features) if calendar else []
    seen += [p.name for p in profiles]
    neighbourhoods = []
    for hood in project.neighbourhoods:
        where = f"neighbourhood {hood.name!r}"
        remember(hood.locations, where)
        _check_columns(hood.locations, [hood.lat, hood.lon], where)
        derived_names = [d.name for d in project.derived]
        if hood.feature not in seen and hood.feature not in derived_names:
            raise ConfigError(f"{where}: feature {hood.feature!r} is not defined")
        batch = {p.name for p in profiles} | {n.name for n in project.neighbourhoods}
        needs = _derived_closure(project, hood.feature)
        if needs & batch:
            raise ConfigError(
                f"{where}: feature {hood.feature!r} depends on batch feature(s)"
                f" {sorted(needs & batch)}; a neighbourhood can only average streaming features"
            )
        if hood.k < 1:
            raise ConfigError(f"{where}: k must be >= 1; got {hood.k}")
        neighbourhoods.append(
            NeighbourSpec(
                name=hood.name,
                feature=hood.feature,
                k=hood.k,
                locations=hood.locations.name,
                lat=hood.lat,
                lon=hood.lon,
                every_us=_positive(hood.every, f"{where} every"),
                lag_us=_non_negative(hood.lag, f"{where} lag"),
            )
        )
    seen += [n.name for n in neighbourhoods]
    derived = []
    for item in project.derived:
        missing = sorted(item.expr.columns() - set(seen))
        if missing:
            raise ConfigError(
                f"derived feature {item.name!r}: uses {missing}, which are not features defined"
                " before it"
            )
        derived.append(DerivedSpec(name=item.name, expr=item.expr))
        seen.append(item.name)
    all_names = seen + [label.name for label in labels] + [g.name + "__as_of" for g in groups]
    duplicates = sorted({n for n in all_names if all_names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"project {project.name!r}: names used twice: {duplicates}")
    clash = sorted(set(all_names) & (RESERVED | {project.entity.key}))
    if clash:
        raise ConfigError(f"project {project.name!r}: reserved names used as features: {clash}")
    return Plan(
        project=project.name,
        entity=project.entity.name,
        key=project.entity.key,
        sources=tuple(_source_spec(s) for _, s in sorted(sources.items())),
        groups=tuple(groups),
        labels=tuple(labels),
        derived=tuple(derived),
        calendar=calendar,
        static=static,
        profiles=tuple(profiles),
        neighbourhoods=tuple(neighbourhoods),
    )


def load_project(path: str | Path, attribute: str = "project") -> Project:
    """Import the user's project file and return its ``project`` (a :class:`Project`).

    Errors raised by the user's code are reported as :class:`UserCodeError` naming the file.
    """
    file = Path(path)
    if file.is_dir():
        file = file / "project.py"
    if not file.is_file():
        raise ConfigError("project file not found", where=str(file))
    module_name = f"_dockline_project_{hashlib.sha1(str(file.resolve()).encode()).hexdigest()[:12]}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise ConfigError("cannot import the project file", where=str(file))
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except ConfigError:
        raise
    except Exception as exc:
        raise UserCodeError(f"{type(exc).__name__}: {exc}", where=str(file)) from exc
    project = getattr(module, attribute, None)
    if not isinstance(project, Project):
        raise ConfigError(
            f"the project file must define `{attribute} = Project(...)`", where=str(file)
        )
    return project

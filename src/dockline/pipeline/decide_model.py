"""The ``model`` forecaster of ``decide evaluate``: the registered champions, scoring features
computed from the simulated city's own snapshots by the code a deployment runs.

Each minute the city's station snapshots are buffered; at each decision cycle they go, as an
archive batch, through :class:`~dockline.ingest.normalize.StationStatusNormalizer` (the import
path the training history took), into an :class:`~dockline.features.online.OnlineExecutor` (the
online feature code serving reads) and into a scratch offline store whose
:class:`~dockline.features.offline.OfflineExecutor` computes the batch features (hour-of-week
profiles, neighbourhoods) exactly as serving's batch runs do. The vectors at the cycle time are
scored by the ``empty_next_hour`` champion and its ``full_next_hour`` companion (ONNX, then the
bundle's calibration): the predictions a served deployment would have given the policy.

The city starts without history, like a new deployment: features with longer windows (the
28-day hour-of-week profile) fill in as the simulated days pass.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from dockline.core.bundle import Bundle, BundleScorer, load_bundle
from dockline.core.config import IngestConfig
from dockline.core.contracts import TOPIC_STATION_INFORMATION, TOPIC_STATION_STATUS, TS_TYPE
from dockline.core.decisions import StationPrediction
from dockline.core.errors import ConfigError, ContractError
from dockline.features.offline import OfflineExecutor
from dockline.features.online import OnlineExecutor
from dockline.features.plan import Plan
from dockline.ingest.information import normalize_information_table
from dockline.ingest.normalize import StationStatusNormalizer
from dockline.pipeline.features import load_plan
from dockline.pipeline.platform import Platform
from dockline.pipeline.serve import model_name
from dockline.sim.city import City
from dockline.store import OfflineStore

if TYPE_CHECKING:
    from dockline.train.registry import MlflowRegistry

__all__ = ["ModelForecaster", "ModelSource"]

_SOURCE = "decide-evaluate"
"""The source name the evaluation's snapshots are normalized under."""


@dataclass(frozen=True, slots=True)
class _Scored:
    label: str
    version: int
    scorer: BundleScorer

    @property
    def bundle(self) -> Bundle:
        return self.scorer.bundle


@dataclass(frozen=True, slots=True)
class ModelSource:
    """The plan and the champion bundles the ``model`` forecaster scores with (loaded once)."""

    plan: Plan
    empty: _Scored
    full: _Scored | None
    ingest: IngestConfig
    memory_limit: str = "2GB"

    @classmethod
    def from_platform(cls, platform: Platform) -> ModelSource:
        """The data dir's plan, its main model's champion (``p_empty``) and, when registered,
        the ``[decide] full_label`` model's champion (``p_full``; else 0, as ``decide run``)."""
        plan = load_plan(platform)
        tables = {s.table for s in plan.sources}
        if tables != {TOPIC_STATION_STATUS, TOPIC_STATION_INFORMATION}:
            raise ConfigError(
                "the model forecaster replays a bike-share city: the plan's sources must be"
                f" station_status and station_information; got {sorted(tables)}",
                where="decide evaluate --forecaster model",
            )
        from dockline.train.registry import MlflowRegistry  # MLflow: only when asked for

        registry = MlflowRegistry.for_data_dir(
            platform.data, platform.clock, tracking_uri=platform.config.registry.tracking_uri
        )
        train_label = platform.config.train.label
        full_label = platform.config.decide.full_label
        empty = _champion(registry, model_name(platform), train_label, plan)
        if empty is None:
            raise ConfigError(
                f"no champion of {model_name(platform)!r} to forecast with; run `dockline train`"
                " (or `dockline demo`) in this data dir first",
                reason="no_champion",
                where=str(platform.data.root),
            )
        full = None
        if full_label and full_label != train_label and full_label in plan.label_names:
            full = _champion(registry, model_name(platform, full_label), full_label, plan)
        return cls(
            plan=plan,
            empty=empty,
            full=full,
            ingest=platform.config.ingest,
            memory_limit=platform.config.features.memory_limit,
        )

    @property
    def version(self) -> str:
        """``empty:<v>/full:<v>``: the decisions' ``model_version``, as ``decide run`` writes it."""
        full = "none" if self.full is None else str(self.full.version)
        return f"empty:{self.empty.version}/full:{full}"

    @property
    def bundle_id(self) -> str:
        """The bundle id(s) the predictions came from."""
        ids = [self.empty.bundle.bundle_id]
        if self.full is not None:
            ids.append(self.full.bundle.bundle_id)
        return "+".join(ids)


def _champion(registry: MlflowRegistry, name: str, label: str, plan: Plan) -> _Scored | None:
    version = registry.resolve(name, "champion")
    if version is None:
        return None
    bundle = load_bundle(Path(version.bundle_path))
    trained_on = bundle.manifest.lineage.plan_hash
    if trained_on and trained_on != plan.hash:
        raise ContractError(
            f"the champion of {name!r} (version {version.version}) was trained on plan"
            f" {trained_on[:12]}, but this data dir's plan is {plan.hash[:12]}",
            reason="plan_mismatch",
            where=version.bundle_path,
        )
    return _Scored(label, version.version, BundleScorer(bundle))


class ModelForecaster:
    """Predictions for one simulated city from the champions (see the module docstring).

    Call :meth:`observe` once per simulated minute (before the city steps) and
    :meth:`predictions` at each decision cycle; :meth:`close` removes the scratch store.
    """

    def __init__(self, source: ModelSource, city: City) -> None:
        self.source = source
        self.city = city
        self._scratch = Path(tempfile.mkdtemp(prefix="dockline-evaluate-"))
        self._store = OfflineStore(self._scratch)
        self._ids = pa.array(city.station_ids, pa.string())
        self._capacity = city.capacity.astype(np.int32)
        self._normalizer = StationStatusNormalizer(_SOURCE, source.ingest)
        self._online = OnlineExecutor(source.plan, batch_provider=self._batch_run)
        self._offline: OfflineExecutor | None = None
        self._offset = {TOPIC_STATION_STATUS: 0, TOPIC_STATION_INFORMATION: 0}
        self._pending: list[tuple[np.ndarray, ...]] = []
        self.rejected = 0
        """Snapshots the normalizer refused (the city publishes none it should; counted)."""
        self._load_information()

    def _load_information(self) -> None:
        city = self.city
        first_seen = (city.status().last_reported * 1_000_000).astype(np.int64)
        info = pa.table(
            {
                "station_id": self._ids,
                "name": pa.array(city.names, pa.string()),
                "lat": pa.array(city.lat, pa.float64()),
                "lon": pa.array(city.lon, pa.float64()),
                "capacity": pa.array(self._capacity, pa.int32()),
                "first_seen": pa.array(first_seen, TS_TYPE),
            }
        )
        batch = normalize_information_table(
            info, source=_SOURCE, publication_delay=self.source.ingest.publication_delay
        )
        self.rejected += len(batch.dead_letters)
        self._normalizer.update_information(batch.accepted)
        self._append(TOPIC_STATION_INFORMATION, batch.accepted)

    def observe(self) -> None:
        """Buffer the city's current snapshot (one row per station, at its ``last_reported``)."""
        city = self.city
        self._pending.append(
            (
                city.status().last_reported * 1_000_000,
                city.bikes.astype(np.int32),
                city.docks_available.astype(np.int32),
                city.is_renting.copy(),
            )
        )

    def vectors(self) -> pa.Table:
        """Land the buffered snapshots; every station's feature vector at the city's time."""
        self._flush()
        return self._online.vectors(self.city.station_ids, self.city.time_s * 1_000_000)

    def predictions(self) -> tuple[StationPrediction, ...]:
        """Every station's ``p_empty`` and ``p_full`` from its vector at the city's time."""
        city = self.city
        vectors = self.vectors()
        p_empty = self._score(self.source.empty, vectors)
        p_full = (
            np.zeros(city.n) if self.source.full is None else self._score(self.source.full, vectors)
        )
        version, bundle_id = self.source.version, self.source.bundle_id
        return tuple(
            StationPrediction(
                station_id=sid,
                p_empty=float(min(1.0, max(0.0, p_empty[i]))),
                p_full=float(min(1.0, max(0.0, p_full[i]))),
                model_version=version,
                bundle_id=bundle_id,
            )
            for i, sid in enumerate(city.station_ids)
        )

    def close(self) -> None:
        """Close the offline executor and remove the scratch store."""
        if self._offline is not None:
            self._offline.close()
            self._offline = None
        shutil.rmtree(self._scratch, ignore_errors=True)

    def __enter__(self) -> ModelForecaster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------------

    def _flush(self) -> None:
        if not self._pending:
            return
        steps = len(self._pending)
        times, bikes, docks, renting = (np.concatenate(c) for c in zip(*self._pending, strict=True))
        self._pending = []
        table = pa.table(
            {
                "station_id": pa.concat_arrays([self._ids] * steps),
                "event_ts": pa.array(times.astype(np.int64), TS_TYPE),
                "num_bikes_available": pa.array(bikes, pa.int32()),
                "num_docks_available": pa.array(docks, pa.int32()),
                "capacity": pa.array(np.tile(self._capacity, steps), pa.int32()),
                "is_renting": pa.array(renting, pa.bool_()),
            }
        )
        batch = self._normalizer.normalize_table(table, batch_id=f"t{int(times.max())}")
        self.rejected += len(batch.dead_letters)
        self._append(TOPIC_STATION_STATUS, batch.accepted)

    def _append(self, topic: str, records: pa.Table) -> None:
        if records.num_rows == 0:
            return
        first = self._offset[topic]
        self._store.write(topic, 0, first, first + records.num_rows - 1, records)
        self._offset[topic] = first + records.num_rows
        self._online.update_many(topic, records)

    def _batch_run(self, run_us: int) -> dict[str, pa.Table]:
        # Created at the first batch run: the executor's views need the status files to exist.
        if self._offline is None:
            plan = self.source.plan
            self._offline = OfflineExecutor(
                plan,
                {s.table: str(self._scratch / s.table) for s in plan.sources},
                memory_limit=self.source.memory_limit,
            )
        return self._offline.batch_run(run_us)

    @staticmethod
    def _score(model: _Scored, vectors: pa.Table) -> np.ndarray:
        names = model.bundle.manifest.features
        missing = [n for n in names if n not in vectors.column_names]
        if missing:
            raise ContractError(
                f"the plan computes no feature {missing[0]!r} that the champion of"
                f" {model.label!r} reads",
                reason="plan_mismatch",
            )
        matrix = np.column_stack(
            [vectors.column(n).to_numpy(zero_copy_only=False) for n in names]
        ).astype(np.float32)
        return model.scorer.score(matrix)

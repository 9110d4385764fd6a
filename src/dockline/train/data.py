"""Load a training set (Parquet + DatasetMetadata) into dense arrays the models consume."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dockline.core.contracts import DatasetMetadata
from dockline.core.errors import ConfigError, ContractError
from dockline.core.files import sha256_file

__all__ = ["METADATA_FILE", "TrainingData", "load_training_set", "select_stations"]

METADATA_FILE = "_metadata.json"
_KEY_COLUMNS = ("station_id", "as_of", "label_available_at")

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True, eq=False)
class TrainingData:
    """A training set as arrays, rows sorted by (``as_of``, station).

    ``X`` is float32 ``[n, k]`` with NaN for null, C-contiguous, columns in ``features`` order
    (the model's input order); ``y`` is int8 0/1. Times are int64 microseconds since the epoch.
    """

    X: npt.NDArray[np.float32]
    y: npt.NDArray[np.int8]
    features: tuple[str, ...]
    station_ids: npt.NDArray[np.str_]
    as_of_us: IntArray
    label_available_us: IntArray
    metadata: DatasetMetadata
    label: str
    horizon_us: int
    unlabeled_rows: int = 0
    """Rows dropped because their label was unknown at build time (null)."""

    @property
    def n_rows(self) -> int:
        """Number of rows."""
        return int(self.y.shape[0])

    def column(self, name: str) -> npt.NDArray[np.float32] | None:
        """The feature column ``name`` (a view), or None when the set has no such feature."""
        try:
            j = self.features.index(name)
        except ValueError:
            return None
        return self.X[:, j]

    def take(self, rows: IntArray) -> TrainingData:
        """The subset at ``rows`` (copied, still C-contiguous)."""
        return TrainingData(
            X=np.ascontiguousarray(self.X[rows]),
            y=self.y[rows],
            features=self.features,
            station_ids=self.station_ids[rows],
            as_of_us=self.as_of_us[rows],
            label_available_us=self.label_available_us[rows],
            metadata=self.metadata,
            label=self.label,
            horizon_us=self.horizon_us,
            unlabeled_rows=self.unlabeled_rows,
        )


def _dataset_labels(meta: DatasetMetadata) -> list[str]:
    raw = meta.extra.get("labels")
    if isinstance(raw, str) and raw:
        return [s.strip() for s in raw.split(",") if s.strip()]
    return [meta.target] if meta.target else []


def _plan_features(meta: DatasetMetadata, where: str) -> list[str]:
    """The plan's feature names, in vector order, as the dataset's build recorded them."""
    raw = meta.extra.get("features")
    if not isinstance(raw, str) or not raw:
        raise ContractError(
            "the dataset records no feature names (extra.features; built before dockline"
            " recorded its plan); rebuild it with `dockline dataset build`",
            reason="dataset_plan_mismatch",
            where=where,
        )
    names = [s.strip() for s in raw.split(",") if s.strip()]
    if meta.feature_count is not None and meta.feature_count != len(names):
        raise ContractError(
            f"the dataset's metadata names {len(names)} features but counts {meta.feature_count}",
            reason="dataset_plan_mismatch",
            where=where,
        )
    return names


def _is_numeric(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_floating(kind) or pa.types.is_integer(kind) or pa.types.is_boolean(kind)
    )


def _check_columns(
    table: pa.Table, features: list[str], labels: list[str], meta: DatasetMetadata, where: str
) -> None:
    """Refuse a data file whose columns are not exactly what its plan produces.

    Allowed: the keys, the labels, the feature groups' ``*__as_of`` timestamps (bookkeeping)
    and the plan's features, each feature numeric. Anything else would be a column no serving
    vector carries (or a feature silently missing), so the dataset is refused, not trained on.
    """
    present = set(table.column_names)
    missing = [f for f in features if f not in present]
    known = {*_KEY_COLUMNS, *labels, *features}
    unexpected = [
        c
        for c in table.column_names
        if c not in known
        and not (c.endswith("__as_of") and pa.types.is_timestamp(table.schema.field(c).type))
    ]
    not_numeric = [
        f for f in features if f in present and not _is_numeric(table.schema.field(f).type)
    ]
    problems = []
    if missing:
        problems.append(f"missing features {', '.join(missing[:5])}")
    if unexpected:
        problems.append(f"columns not in its plan {', '.join(unexpected[:5])}")
    if not_numeric:
        problems.append(f"non-numeric features {', '.join(not_numeric[:5])}")
    if not problems and meta.columns and list(meta.columns) != table.column_names:
        problems.append("columns differ from those its metadata lists")
    if problems:
        raise ContractError(
            f"the training set does not match its plan ({meta.extra.get('plan_hash', '?')!s:.12}):"
            f" {'; '.join(problems)}",
            reason="dataset_plan_mismatch",
            where=where,
        )


def _check_digests(directory: Path, meta: DatasetMetadata) -> None:
    """Each data file's SHA-256 must be the one its metadata recorded (a model's lineage
    names the dataset by that hash, so a file changed in place would be a different dataset)."""
    for f in meta.files:
        path = directory / f.path
        if not path.is_file():
            raise ContractError(f"data file {f.path} is missing", where=str(directory))
        if sha256_file(path) != f.sha256:
            raise ContractError(
                f"{f.path} is not the file its metadata describes (SHA-256 differs): the"
                " dataset was changed after it was built; rebuild it",
                reason="dataset_tampered",
                where=str(path),
            )


def _micros(column: pa.ChunkedArray) -> IntArray:
    ts = column.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
    return np.asarray(ts.to_numpy(), dtype=np.int64)


def select_stations(station_ids: npt.NDArray[np.str_], max_rows: int) -> npt.NDArray[np.bool_]:
    """Mask keeping whole stations, taken in CRC32 order, while the total stays ≤ ``max_rows``.

    A stable hash rather than random rows: the subset is the same on every machine and run,
    and every kept station keeps its whole history (no holes in its time series).
    """
    names, counts = np.unique(station_ids, return_counts=True)
    order = sorted(range(len(names)), key=lambda i: (zlib.crc32(str(names[i]).encode()), names[i]))
    keep: list[str] = []
    total = 0
    for i in order:
        if keep and total + int(counts[i]) > max_rows:
            break
        keep.append(str(names[i]))
        total += int(counts[i])
    return np.isin(station_ids, np.asarray(keep))


def load_training_set(
    path: Path, label: str | None = None, *, max_rows: int | None = None
) -> TrainingData:
    """Read a training set directory (``data.parquet`` + ``_metadata.json``) or its Parquet file.

    ``label`` must be one of the dataset's boolean labels (default: the label the dataset was
    built for). Features are the plan's feature names the build recorded, in vector order —
    never "whatever numeric columns the file has": a file whose columns do not match its plan
    (a feature missing, a column the plan does not produce) or whose bytes are not the ones its
    metadata hashed is refused. Rows whose label is null (unknown at build time) are dropped
    and counted in ``unlabeled_rows``. ``max_rows`` keeps whole stations
    (see :func:`select_stations`).
    """
    directory = path if path.is_dir() else path.parent
    meta = DatasetMetadata.read(directory / METADATA_FILE)
    where = str(path)
    labels = _dataset_labels(meta)
    chosen = label or (str(meta.extra["label"]) if meta.extra.get("label") else meta.target)
    if not chosen or chosen not in labels:
        raise ConfigError(
            f"label must be one of {', '.join(labels) or '(none)'}; got {chosen!r}",
            where="train.label",
        )
    horizon = meta.extra.get("horizon_us")
    if not isinstance(horizon, int) or isinstance(horizon, bool) or horizon <= 0:
        raise ContractError("metadata.extra.horizon_us must be a positive integer", where=where)
    features = _plan_features(meta, where)
    if path.is_dir():
        _check_digests(directory, meta)
        files = [directory / f.path for f in meta.files]
    else:
        _check_digests(
            directory,
            meta.model_copy(update={"files": [f for f in meta.files if f.path == path.name]}),
        )
        files = [path]
    table = pa.concat_tables([pq.read_table(f) for f in files]) if files else None
    if table is None or table.num_rows == 0:
        raise ContractError("the training set has no rows", where=where)
    for name in (*_KEY_COLUMNS, chosen):
        if name not in table.column_names:
            raise ContractError(f"column {name!r} is missing", where=where)
    _check_columns(table, features, labels, meta, where)
    if not pa.types.is_boolean(table.schema.field(chosen).type):
        raise ConfigError(
            f"label must be boolean for classification; {chosen!r} is "
            f"{table.schema.field(chosen).type}",
            where="train.label",
        )
    if not features:
        raise ContractError("the training set has no feature columns", where=where)
    known = pc.is_valid(table.column(chosen))
    unlabeled = table.num_rows - int(pc.sum(pc.cast(known, pa.int64())).as_py() or 0)
    table = table.filter(known)
    if table.num_rows == 0:
        raise ContractError(
            f"every row's {chosen!r} is unknown (its horizon ends after the data known at build"
            " time); build the dataset over an earlier range",
            reason="no_labels",
            where=where,
        )

    station_ids = np.asarray(table.column("station_id").cast(pa.string()).to_pylist(), dtype=str)
    as_of = _micros(table.column("as_of"))
    available = _micros(table.column("label_available_at"))
    order = np.lexsort((station_ids, as_of))
    if max_rows is not None and table.num_rows > max_rows:
        mask = select_stations(station_ids, max_rows)
        order = order[mask[order]]

    x = np.empty((len(order), len(features)), dtype=np.float32)
    for j, name in enumerate(features):
        col = table.column(name).cast(pa.float64())
        values = np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64)
        x[:, j] = values[order]  # nulls arrive as NaN
    y = np.asarray(table.column(chosen).to_numpy(zero_copy_only=False), dtype=np.int8)[order]
    return TrainingData(
        X=np.ascontiguousarray(x),
        y=y,
        features=tuple(features),
        station_ids=station_ids[order],
        as_of_us=as_of[order],
        label_available_us=available[order],
        metadata=meta,
        label=chosen,
        horizon_us=int(horizon),
        unlabeled_rows=unlabeled,
    )

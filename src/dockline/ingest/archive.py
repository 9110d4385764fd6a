"""Archive readers: directories of GBFS JSON documents, and Parquet/CSV station-status tables.

Both yield in a deterministic order with deterministic batch ids, so re-importing an archive
after a crash produces the same dead-letter ids and the same records. Tables are streamed in
record batches (bounded memory), never loaded whole; :func:`map_columns` renames their columns
onto the normalized names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import msgspec
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as ds

from dockline.core.errors import ConfigError, SourceError
from dockline.core.time import EPOCH
from dockline.ingest._time import parse_timestamp_or_none

__all__ = [
    "DIVVY_MAPPING",
    "ArchiveDocument",
    "file_digest",
    "iter_json_archive",
    "iter_table_archive",
    "map_columns",
]

DIVVY_MAPPING: Mapping[str, str] = {"obs_ts": "event_ts"}
"""Column mapping of the Divvy layout (``/work/shared/data/divvy``) to normalized names."""

_TIME_COLUMNS = ("event_ts", "ingested_at")


@dataclass(frozen=True)
class ArchiveDocument:
    """One archived GBFS document; ``ingested_at = last_updated + publication_delay``.

    ``digest`` (BLAKE2b of the bytes) identifies the document whatever its path.
    """

    kind: Literal["station_information", "station_status"]
    path: Path
    batch_id: str  # the path relative to the archive root: stable across runs
    payload: bytes
    last_updated: datetime | None
    ingested_at: datetime
    digest: str = ""


class _Head(msgspec.Struct):
    last_updated: object = None


def _last_updated(payload: bytes) -> datetime | None:
    try:
        head = msgspec.json.decode(payload, type=_Head)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        # RecursionError: a hostile, deeply nested document; the normalizer dead-letters it
        return None
    return parse_timestamp_or_none(head.last_updated)


def file_digest(data: bytes) -> str:
    """The content identity of an archive file: BLAKE2b-128 of its bytes."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def iter_json_archive(
    path: str | Path, *, publication_delay: timedelta = timedelta(0)
) -> Iterator[ArchiveDocument]:
    """Yield ``station_information*.json`` then ``station_status*.json`` documents under ``path``.

    Information documents come first (they carry the capacities status rows need), then status
    documents by ``last_updated`` then file name. Documents whose ``last_updated`` cannot be read
    come last in their group, with the group's latest ``ingested_at`` (the normalizer
    dead-letters them as ``malformed``).

    Streamed: a first pass reads each file once for its ``last_updated`` and keeps only that;
    the second reads each file again as it is yielded, so memory holds one document at a time.
    """
    root = Path(path)
    if not root.exists():
        raise SourceError("archive does not exist", reason="not_found", where=str(root))
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*.json") if p.is_file())
    groups: dict[str, list[tuple[Path, datetime | None]]] = {
        "station_information": [],
        "station_status": [],
    }
    for file in files:
        kind = next((k for k in groups if file.name.startswith(k)), None)
        if kind is None:
            continue
        groups[kind].append((file, _last_updated(_read(file))))
    base = root if root.is_dir() else root.parent
    latest = EPOCH
    for kind in ("station_information", "station_status"):
        docs = groups[kind]
        far_future = datetime.max.replace(tzinfo=EPOCH.tzinfo)
        docs.sort(key=lambda d: (d[1] or far_future, d[0].relative_to(base).as_posix()))
        group_latest: datetime | None = None
        for file, last_updated in docs:
            if last_updated is not None:
                ingested_at = last_updated + publication_delay
                group_latest = ingested_at
                latest = max(latest, ingested_at)
            else:
                ingested_at = group_latest or latest
            payload = _read(file)
            yield ArchiveDocument(
                kind="station_information" if kind == "station_information" else "station_status",
                path=file,
                batch_id=file.relative_to(base).as_posix(),
                payload=payload,
                last_updated=last_updated,
                ingested_at=ingested_at,
                digest=file_digest(payload),
            )


def _read(file: Path) -> bytes:
    try:
        return file.read_bytes()
    except OSError as exc:
        raise SourceError(f"cannot read archive file: {exc}", where=str(file)) from exc


def iter_table_archive(
    path: str | Path,
    mapping: Mapping[str, str] = DIVVY_MAPPING,
    batch_rows: int = 200_000,
) -> Iterator[tuple[str, pa.Table]]:
    """Yield ``(batch_id, table)`` from Parquet or CSV files (a file or a directory, recursive).

    Files are read in sorted order in record batches of at most ``batch_rows`` rows, renamed
    with :func:`map_columns`. ``batch_id`` is
    ``"<relative path>#<batch index>"``. CSV time columns are read as text, so the normalizer
    parses ISO-8601 (with offset) or POSIX seconds itself and dead-letters what it cannot.
    """
    if batch_rows < 1:
        raise ConfigError(f"batch_rows must be >= 1; got {batch_rows}")
    root = Path(path)
    if not root.exists():
        raise SourceError("archive does not exist", reason="not_found", where=str(root))
    if root.is_file():
        files, base = [root], root.parent
    else:
        files = sorted(
            p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in (".parquet", ".csv")
        )
        base = root
    if not files:
        raise SourceError("no .parquet or .csv files in the archive", where=str(root))
    for file in files:
        relative = file.relative_to(base).as_posix()
        try:
            dataset = ds.dataset(file, format=_format(file, mapping))
            for index, batch in enumerate(dataset.to_batches(batch_size=batch_rows)):
                table = map_columns(pa.Table.from_batches([batch]), mapping)
                yield f"{relative}#{index}", table
        except (pa.ArrowInvalid, OSError) as exc:
            raise SourceError(f"cannot read archive file: {exc}", where=str(file)) from exc


def _format(file: Path, mapping: Mapping[str, str]) -> ds.FileFormat:
    if file.suffix.lower() == ".parquet":
        return ds.ParquetFileFormat()
    inverse = {dst: src for src, dst in mapping.items()}
    as_text = {inverse.get(name, name): pa.string() for name in _TIME_COLUMNS}
    return ds.CsvFileFormat(convert_options=pacsv.ConvertOptions(column_types=as_text))


def map_columns(table: pa.Table, mapping: Mapping[str, str]) -> pa.Table:
    """Rename archive columns to normalized names, e.g. ``{"obs_ts": "event_ts"}``.

    A mapped source column that does not exist, or a rename that would create a duplicate
    column, is a :class:`~dockline.core.errors.ConfigError` naming the column.
    """
    names: Sequence[str] = table.column_names
    for src, dst in mapping.items():
        if src not in names:
            raise ConfigError(
                f"mapped column {src!r} (→ {dst!r}) does not exist; columns are {list(names)}"
            )
    renamed = [mapping.get(name, name) for name in names]
    if len(set(renamed)) != len(renamed):
        clash = sorted({name for name in renamed if renamed.count(name) > 1})
        raise ConfigError(
            f"column mapping produces duplicate columns {clash}; columns are {list(names)}"
        )
    return table.rename_columns(renamed)

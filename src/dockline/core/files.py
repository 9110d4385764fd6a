"""Deterministic data files: one Parquet writer and one digest for every layer.

Reproducibility (same data ⇒ same dataset bytes ⇒ same hash in lineage) depends on every writer
using the same fixed options, so they live here once.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from dockline.core.errors import StorageError

__all__ = ["sha256_file", "write_parquet"]


def write_parquet(table: pa.Table, path: Path) -> None:
    """Write ``table`` with fixed options, atomically (then rename): same rows ⇒ same bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        pq.write_table(
            table.replace_schema_metadata(None).combine_chunks(),
            tmp,
            row_group_size=1_048_576,
            version="2.6",
            data_page_version="1.0",
            compression="zstd",
            compression_level=3,
            use_dictionary=True,
            write_statistics=True,
            write_page_index=False,
            store_schema=True,
        )
        os.replace(tmp, path)
    except OSError as exc:
        raise StorageError(f"cannot write Parquet file: {exc}", where=str(path)) from exc


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()

"""dockline.ingest: GBFS parsing, validation at the edge, the feed client and archive readers.

Output is Arrow tables with exactly ``STATION_STATUS_SCHEMA`` / ``STATION_INFORMATION_SCHEMA``
plus a ``DeadLetter`` for every rejected record; storage is the wiring layer's job.
"""

from dockline.ingest.archive import (
    DIVVY_MAPPING,
    ArchiveDocument,
    file_digest,
    iter_json_archive,
    iter_table_archive,
    map_columns,
)
from dockline.ingest.client import (
    SIMULATED_CLOCK_FIELD,
    Discovery,
    FeedHTTPError,
    Fetched,
    GbfsClient,
    parse_discovery,
)
from dockline.ingest.information import (
    normalize_information_table,
    normalize_station_information,
)
from dockline.ingest.normalize import Batch, StationStatusNormalizer

__all__ = [
    "DIVVY_MAPPING",
    "SIMULATED_CLOCK_FIELD",
    "ArchiveDocument",
    "Batch",
    "Discovery",
    "FeedHTTPError",
    "Fetched",
    "GbfsClient",
    "StationStatusNormalizer",
    "file_digest",
    "iter_json_archive",
    "iter_table_archive",
    "map_columns",
    "normalize_information_table",
    "normalize_station_information",
    "parse_discovery",
]

"""Typed, versioned contracts between layers.

Two kinds live here:

* **Columnar record schemas** (Arrow) for the events that flow through the log and the stores —
  the hot path stays vectorized, so events travel as Arrow tables, never as per-row objects.
* **Metadata contracts** (pydantic, ``schema_version``) written beside the artifacts they
  describe and validated on read (``DatasetMetadata`` …), extended from the monitoring layer's
  contracts.

Dead letters are small msgspec structs: they are many on a noisy feed and must be cheap.
"""

from __future__ import annotations

import enum
import hashlib
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import msgspec
import pyarrow as pa
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from dockline.core.errors import ContractError
from dockline.core.time import ensure_utc

__all__ = [
    "CONFIRMATION_SCHEMA",
    "DEAD_LETTER_ALARM_SHARE",
    "STATION_INFORMATION_SCHEMA",
    "STATION_STATUS_SCHEMA",
    "TOPIC_STATION_INFORMATION",
    "TOPIC_STATION_STATUS",
    "TS_TYPE",
    "Contract",
    "DatasetMetadata",
    "DeadLetter",
    "FileDigest",
    "GateVerdict",
    "IngestSummary",
    "JsonModel",
    "ModelVersion",
    "PromotionEvent",
    "RejectReason",
    "ServingMetricsWindow",
    "SliceFlag",
    "TrainingMetadata",
    "UtcDatetime",
    "confirmations_topic",
    "dead_letter_id",
]

TS_TYPE = pa.timestamp("us", tz="UTC")
"""Every timestamp column: microseconds, UTC."""

TOPIC_STATION_STATUS = "station_status"
TOPIC_STATION_INFORMATION = "station_information"


def confirmations_topic(topic: str) -> str:
    """The log topic of ``topic``'s confirmations: ``station_status.confirmed``.

    A poll that re-sees an entity's newest event (a quiet station) appends no event, but a row
    ``(<key>, event_ts, ingested_at)`` here: the feed confirmed at ``ingested_at`` that the event
    of ``event_ts`` is still current. Serving ages its knowledge from the last confirmation.
    """
    return f"{topic}.confirmed"


STATION_STATUS_SCHEMA = pa.schema(
    [
        pa.field("station_id", pa.string(), nullable=False),
        pa.field("event_ts", TS_TYPE, nullable=False),  # GBFS last_reported
        pa.field("ingested_at", TS_TYPE, nullable=False),  # when dockline learned it
        pa.field("num_bikes_available", pa.int32(), nullable=False),
        pa.field("num_docks_available", pa.int32(), nullable=False),
        pa.field("capacity", pa.int32()),  # null when neither status nor information gives it
        pa.field("is_installed", pa.bool_(), nullable=False),
        pa.field("is_renting", pa.bool_(), nullable=False),
        pa.field("is_returning", pa.bool_(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
    ]
)
"""Normalized ``station_status`` events (DESIGN.md, "Names and places")."""

STATION_INFORMATION_SCHEMA = pa.schema(
    [
        pa.field("station_id", pa.string(), nullable=False),
        pa.field("event_ts", TS_TYPE, nullable=False),  # the document's last_updated
        pa.field("ingested_at", TS_TYPE, nullable=False),
        pa.field("name", pa.string()),
        pa.field("lat", pa.float64(), nullable=False),
        pa.field("lon", pa.float64(), nullable=False),
        pa.field("capacity", pa.int32()),
        pa.field("region_id", pa.string()),
        pa.field("source", pa.string(), nullable=False),
    ]
)
"""Normalized ``station_information`` events."""

CONFIRMATION_SCHEMA = pa.schema(
    [
        pa.field("station_id", pa.string(), nullable=False),
        pa.field("event_ts", TS_TYPE, nullable=False),  # the confirmed last_reported
        pa.field("ingested_at", TS_TYPE, nullable=False),  # the poll that saw it again
    ]
)
"""A feed poll saw a station's newest accepted event again: our knowledge of it is current.

Rows of :func:`confirmations_topic` (``station_status.confirmed``), keyed by ``station_id``.
Not records of the source: the ingest accounting counts them as ``unchanged``.
"""


class RejectReason(enum.StrEnum):
    """Why a record went to the dead letters. Stable: counted in metrics and shown to users."""

    MALFORMED = "malformed"  # the document itself is not valid JSON / not a GBFS document
    MISSING_FIELD = "missing_field"
    BAD_TYPE = "bad_type"
    BAD_VALUE = "bad_value"  # right type, impossible value (e.g. latitude 200)
    NEGATIVE_COUNT = "negative_count"
    DUPLICATE = "duplicate"  # same entity and event time seen already
    CONFLICT = "conflict"  # same entity and event time as an accepted event, other values
    STALE = "stale"  # event time far in the past (placeholders such as 86400)
    FUTURE = "future"  # event time ahead of the clock beyond tolerance
    LATE = "late"  # older than the entity's watermark minus the allowed lateness


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """A rejected record with everything needed to understand and replay it.

    ``id`` is deterministic (source, batch and position), so writing the same rejection twice
    — e.g. after a crash and restart — stores it once.
    """

    id: str
    source: str
    topic: str
    reason: RejectReason
    detail: str
    raw: bytes  # the record exactly as received (JSON bytes for feeds, JSON of the row for tables)
    ingested_at: datetime
    key: str | None = None
    event_ts: datetime | None = None


def dead_letter_id(source: str, batch: str, position: int) -> str:
    """Deterministic dead-letter id for the record at ``position`` of ``batch`` from ``source``."""
    digest = hashlib.blake2b(f"{source}\x1f{batch}\x1f{position}".encode(), digest_size=12)
    return digest.hexdigest()


def _utc(value: datetime) -> datetime:
    return ensure_utc(value)


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]
"""A pydantic datetime field that must be tz-aware; stored as UTC."""


class JsonModel(BaseModel):
    """A frozen pydantic record kept as a JSON file: unknown fields refused, atomic writes,
    and a bad file read as :class:`ContractError` naming it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def write(self, path: Path) -> None:
        """Write the record as pretty JSON, atomically (write then rename)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def read(cls, path: Path) -> Self:
        """Read and validate a file; a missing or bad one raises :class:`ContractError`."""
        try:
            return cls.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            raise ContractError(f"{cls.__name__} file is missing", where=str(path)) from None
        except ValueError as exc:
            detail = "; ".join(str(exc).splitlines()[:3])
            raise ContractError(f"{cls.__name__} is invalid: {detail}", where=str(path)) from exc


class Contract(JsonModel):
    """Base of metadata contracts: frozen, strict about unknown fields, versioned."""

    schema_version: Literal["v1"] = "v1"


class FileDigest(BaseModel):
    """One data file of a dataset or partition."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str  # relative to the manifest's directory
    rows: int = Field(ge=0)
    bytes: int = Field(ge=0)
    sha256: str


class DatasetMetadata(Contract):
    """Describes a dataset or one partition of a store (P2 → P6 contract, extended).

    Written as ``_manifest.json`` beside the files it describes. ``content_hash`` is the SHA-256
    over the sorted file digests, so two manifests with the same hash hold the same bytes.
    """

    dataset_name: str
    dataset_version: str
    path: str
    built_at: UtcDatetime
    row_count: int = Field(ge=0)
    entity: str = "station_id"
    event_ts: str = "event_ts"
    partition: str | None = None
    time_range_start: UtcDatetime | None = None
    time_range_end: UtcDatetime | None = None
    columns: list[str] = Field(default_factory=list)
    files: list[FileDigest] = Field(default_factory=list)
    content_hash: str = ""
    feature_count: int | None = None
    target: str | None = None
    extra: dict[str, str | int | float | bool | None] = Field(default_factory=dict)


class IngestSummary(msgspec.Struct, kw_only=True):
    """What an ingest run did.

    ``received == accepted + unchanged + rejected + skipped_records`` always:

    * ``unchanged`` counts records a station repeated without reporting anew (same key, time
      and values as its newest accepted event): already stored, so neither appended nor dead
      letters. A feed poll records each as one of ``confirmations``.
    * ``skipped_records`` are the records of ``skipped_documents``: documents of a feed whose
      ``last_updated`` did not advance past the newest one committed (a re-fetch), and
      archive files already imported.
    * ``alarm`` is set when most of what was received went to the dead letters (see
      :data:`DEAD_LETTER_ALARM_SHARE`): a wrong clock or config, not a noisy feed. The CLI
      prints it and exits non-zero.
    """

    source: str
    received: int = 0
    accepted: int = 0
    unchanged: int = 0
    dead_letters: dict[str, int] = msgspec.field(default_factory=dict)
    documents: int = 0
    skipped_documents: int = 0
    skipped_records: int = 0
    confirmations: int = 0
    stations: int = 0
    seconds: float = 0.0
    alarm: str | None = None

    def add_rejections(self, letters: list[DeadLetter]) -> None:
        """Count ``letters`` by reason."""
        for letter in letters:
            key = str(letter.reason)
            self.dead_letters[key] = self.dead_letters.get(key, 0) + 1

    @property
    def rejected(self) -> int:
        """Total dead letters."""
        return sum(self.dead_letters.values())

    def check_accounting(self) -> None:
        """Raise if any record is unaccounted for; set :attr:`alarm` if most were rejected."""
        if self.accepted + self.unchanged + self.rejected + self.skipped_records != self.received:
            raise ContractError(
                f"row accounting broken: accepted {self.accepted} + unchanged {self.unchanged}"
                f" + dead letters {self.rejected} + skipped {self.skipped_records}"
                f" != received {self.received}",
                reason="accounting",
                where=self.source,
            )
        judged = self.received - self.skipped_records
        if judged and self.rejected > DEAD_LETTER_ALARM_SHARE * judged:
            top = max(self.dead_letters.items(), key=lambda item: item[1])[0]
            self.alarm = (
                f"{self.rejected:,} of {judged:,} records ({self.rejected / judged:.0%}) went to"
                f" the dead letters, most as {top!r}: check the feed's clock (--clock) and the"
                " [ingest] settings, then `dockline deadletters --replay`"
            )

    def to_dict(self) -> dict[str, object]:
        """The summary as plain JSON-ready values (what ``ingest --json`` prints)."""
        return {
            "source": self.source,
            "received": self.received,
            "accepted": self.accepted,
            "unchanged": self.unchanged,
            "dead_letters": dict(sorted(self.dead_letters.items())),
            "documents": self.documents,
            "skipped_documents": self.skipped_documents,
            "skipped_records": self.skipped_records,
            "confirmations": self.confirmations,
            "stations": self.stations,
            "seconds": round(self.seconds, 3),
            "records_per_second": round(self.received / self.seconds) if self.seconds else None,
            "alarm": self.alarm,
        }


DEAD_LETTER_ALARM_SHARE = 0.5
"""An ingest run that dead-letters more than this share of what it judged raises the alarm."""


class TrainingMetadata(Contract):
    """One training run (P4 → P6 contract, extended with the bundle it produced)."""

    run_id: str
    model_name: str
    model_version: str
    input_dataset_name: str
    input_dataset_version: str
    started_at: UtcDatetime
    completed_at: UtcDatetime
    metrics: dict[str, float] = Field(default_factory=dict)
    artifact_path: str
    bundle_id: str | None = None
    candidate: str | None = None


class SliceFlag(BaseModel):
    """A test slice where the candidate trails persistence (see ``[train.slices]``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    family: str
    slice: str
    metric: str
    candidate: float
    persistence: float
    rows: int
    positives: int
    interval: tuple[float, float] | None = None
    """Interval of candidate − persistence (oriented: < 0 is worse); None without bootstrap."""

    def describe(self) -> str:
        """One line: which slice, both values, the support."""
        band = (
            ""
            if self.interval is None
            else f", difference interval [{self.interval[0]:+.3f}, {self.interval[1]:+.3f}]"
        )
        return (
            f"slice {self.family}={self.slice}: {self.metric} {self.candidate:.3f} is worse than"
            f" persistence {self.persistence:.3f} ({self.rows} rows, {self.positives}"
            f" positives{band})"
        )


class GateVerdict(Contract):
    """Whether a model version may become champion, and why (stored with the version)."""

    passed: bool
    primary_metric: str
    higher_is_better: bool
    value: float
    margin: float
    baselines: dict[str, float] = Field(default_factory=dict)
    champion_version: int | None = None
    champion_value: float | None = None
    ece: float
    max_ece: float
    reasons: list[str] = Field(default_factory=list)
    """Each failed condition, in words; empty when ``passed``."""
    warnings: list[str] = Field(default_factory=list)
    """Findings that do not fail the gate (slices flagged under ``on_flag = "warn"``)."""
    slice_flags: list[SliceFlag] = Field(default_factory=list)
    """Test slices where the candidate trails persistence (fail or warn per ``slice_policy``)."""
    slice_policy: Literal["warn", "fail"] = "warn"
    slices_flagged: int = 0
    """How many slices were worse (``slice_flags`` keeps the worst 20)."""
    slices_judged: int = 0
    """Slices with enough rows and positives to judge (0: no slice check ran)."""
    slices_inconclusive: int = 0
    """Slices too small to judge."""

    def slice_note(self) -> str:
        """``"; slices worse than persistence (warn): hour=night (00–06h), …"``; "" if none."""
        if not self.slice_flags:
            return ""
        names = ", ".join(f"{f.family}={f.slice}" for f in self.slice_flags[:5])
        more = max(self.slices_flagged, len(self.slice_flags)) - min(len(self.slice_flags), 5)
        return f"; slices worse than persistence ({self.slice_policy}): {names}" + (
            f" and {more} more" if more > 0 else ""
        )


class ModelVersion(Contract):
    """A registered model version: which bundle it is, and the gate's verdict on it."""

    name: str
    version: int = Field(ge=1)
    bundle_id: str
    bundle_path: str
    run_id: str | None = None
    created_at: UtcDatetime
    gate: GateVerdict | None = None
    aliases: list[str] = Field(default_factory=list)


class PromotionEvent(Contract):
    """One line of a model's append-only alias history (who moved which alias, when, why)."""

    name: str
    alias: str
    action: Literal["register", "promote", "rollback", "demote", "stage"]
    """``stage``: the alias did not move; the version entered a phase (shadow, canary, pause)."""
    from_version: int | None = None
    to_version: int | None = None
    actor: str
    reason: str
    at: UtcDatetime
    evidence: dict[str, Any] = Field(default_factory=dict)
    """What the move was decided on (canary analyses, trigger reasons); empty for manual moves."""


class ServingMetricsWindow(Contract):
    """Serving telemetry for one deployment and endpoint over one window (P5 → P6 contract).

    Exactly the fields of the monitoring layer's contract (``seeds/003``); P6 deduplicates on
    (deployment_id, endpoint_name, window_start, window_end).
    """

    window_start: UtcDatetime
    window_end: UtcDatetime
    service_name: str
    service_version: str
    environment: str
    deployment_id: str
    endpoint_name: str
    model_name: str
    model_version: str
    bundle_id: str
    input_dataset_name: str
    input_dataset_version: str
    request_count: int = Field(ge=0)
    success_count: int = Field(ge=0)
    failure_count: int = Field(ge=0)
    rejected_count: int = Field(ge=0)
    timeout_count: int = Field(ge=0)
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    validation_error_count: int = Field(ge=0)
    feature_lookup_error_count: int = Field(ge=0)
    model_load_error_count: int = Field(ge=0)
    inference_runtime_error_count: int = Field(ge=0)
    dependency_error_count: int = Field(ge=0)
    internal_error_count: int = Field(ge=0)
    input_schema_failure_count: int = Field(ge=0)
    missing_required_field_count: int = Field(ge=0)
    invalid_type_count: int = Field(ge=0)
    domain_violation_count: int = Field(ge=0)
    prediction_count: int = Field(ge=0)
    prediction_null_count: int = Field(ge=0)
    prediction_non_finite_count: int = Field(ge=0)
    prediction_out_of_range_count: int = Field(ge=0)
    fallback_prediction_count: int = Field(ge=0)
    heartbeat_emitted_at: UtcDatetime

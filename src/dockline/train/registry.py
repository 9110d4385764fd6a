"""The model registry on MLflow, with the append-only alias history MLflow lacks.

MLflow's model registry (any tracking URI; by default SQLite in ``<data>/mlruns/mlflow.db``)
holds the versions, their aliases (``champion``, ``challenger``) and, as version tags, the
bundle id and the gate's verdict. Each version's bundle directory is logged as run artifacts,
so the registry alone can restore it. MLflow keeps no record of alias moves (mlflow#2169), so
every register and alias move is also appended, as a :class:`PromotionEvent`, to a JSON-lines
file: who moved what, when, from which version to which, and why.

>>> registry = MlflowRegistry.for_data_dir(DataDir("/tmp/data"))  # doctest: +SKIP
>>> version = registry.register("bikes", bundle_dir, run_id=None, gate=verdict)  # doctest: +SKIP
>>> registry.promote("bikes", version.version, actor="ana", reason="beats v3")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import sqlite3
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, cast, get_args

from dockline.core.bundle import Bundle, load_bundle
from dockline.core.config import DataDir
from dockline.core.contracts import GateVerdict, ModelVersion, PromotionEvent
from dockline.core.errors import ContractError, NotFoundError, StorageError, ValidationError
from dockline.core.time import Clock, SystemClock, ensure_utc, from_micros
from dockline.train._db import sqlalchemy_url

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "MlflowRegistry",
    "mlflow_client",
    "quiet_mlflow",
    "relocate_artifacts",
]

CHAMPION = "champion"
CHALLENGER = "challenger"

TAG_BUNDLE_ID = "bundle_id"
TAG_GATE = "gate_verdict"
TAG_CREATED_AT = "dockline.created_at"
_Action = Literal["register", "promote", "rollback", "demote", "stage"]
_ACTIONS: tuple[str, ...] = get_args(_Action)


def quiet_mlflow() -> None:
    """Silence MLflow's and Alembic's INFO lines (table creation, migrations), progress bars.

    The CLI prints its own lines; MLflow's would interleave with them on every first use of a
    store. Warnings and errors still come through.
    """
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Its artifact download progress bar too (an explicit user setting wins).
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@contextlib.contextmanager
def _mlflow_warnings() -> Iterator[None]:
    # MLflow's SQLAlchemy store calls a loader strategy SQLAlchemy 2.1 deprecates, at import;
    # it is MLflow's to fix and harmless here, and must not fail runs that treat warnings as
    # errors.
    with warnings.catch_warnings():
        try:
            from sqlalchemy.exc import SADeprecationWarning

            warnings.simplefilter("ignore", SADeprecationWarning)
        except ImportError:  # pragma: no cover - sqlalchemy comes with MLflow's SQL store
            pass
        yield


def mlflow_client(tracking_uri: str) -> Any:
    """An ``MlflowClient`` for tracking and registry at ``tracking_uri``, without the noise."""
    with _mlflow_warnings():
        from mlflow import MlflowClient

        quiet_mlflow()  # after the import: importing mlflow sets its loggers to INFO
        url = sqlalchemy_url(tracking_uri)
        return MlflowClient(tracking_uri=url, registry_uri=url)


class MlflowRegistry:
    """:class:`~dockline.core.ports.ModelRegistry` on MLflow's model registry.

    ``artifact_root`` is where experiments this registry creates keep their artifacts (so
    nothing lands in the working directory); ``history_path`` is the JSON-lines alias history;
    ``bundles_root`` is where :meth:`resolve` and :meth:`get` put verified local copies of the
    bundles (default: ``bundles/`` beside the ``mlruns/`` directory holding the history, i.e.
    ``<data>/bundles`` for the data-directory layout).
    """

    def __init__(
        self,
        tracking_uri: str,
        artifact_root: Path,
        history_path: Path,
        clock: Clock | None = None,
        *,
        bundles_root: Path | None = None,
    ) -> None:
        self._client: Any = mlflow_client(tracking_uri)
        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root
        self.history_path = history_path
        self.bundles_root = bundles_root or history_path.parent.parent / "bundles"
        self._clock: Clock = clock or SystemClock()

    @classmethod
    def for_data_dir(
        cls, data: DataDir, clock: Clock | None = None, *, tracking_uri: str | None = None
    ) -> MlflowRegistry:
        """The registry of a data directory: SQLite store, artifacts and history in ``mlruns/``.

        MLflow stores absolute artifact locations; they are re-pointed at this data dir on open
        (:func:`relocate_artifacts`), so a copied or moved data dir reads and writes its own.
        ``tracking_uri`` (``[registry]``, e.g. ``postgresql://…``) keeps runs and versions in
        that database instead; artifacts and the alias history stay in the data dir.
        """
        data.mlruns.mkdir(parents=True, exist_ok=True)
        if tracking_uri is None:
            relocate_artifacts(data.mlflow_db, data.mlruns / "artifacts")
        return cls(
            tracking_uri or f"sqlite:///{data.mlflow_db.resolve()}",
            data.mlruns / "artifacts",
            data.registry_history,
            clock,
            bundles_root=data.bundles,
        )

    # -- versions -------------------------------------------------------------------------

    def register(
        self, name: str, bundle: Path, *, run_id: str | None, gate: GateVerdict | None
    ) -> ModelVersion:
        """Register ``bundle`` (verified first) as the next version of ``name``.

        The bundle's files are logged as artifacts of ``run_id`` (or of a new run in an
        experiment named after the model) under ``bundles/<bundle_id>``.
        """
        verified = load_bundle(bundle)
        from mlflow.exceptions import MlflowException

        try:
            if run_id is None:
                experiment_id = self._experiment_id(name)
                run = self._client.create_run(experiment_id, run_name=f"register-{name}")
                run_id = str(run.info.run_id)
                self._client.set_terminated(run_id)
            self._client.log_artifacts(
                run_id, str(verified.path), artifact_path=f"bundles/{verified.bundle_id}"
            )
            source = (
                f"{self._client.get_run(run_id).info.artifact_uri}/bundles/{verified.bundle_id}"
            )
            self._ensure_model(name)
            created = self._now()
            tags = {TAG_BUNDLE_ID: verified.bundle_id, TAG_CREATED_AT: created.isoformat()}
            if gate is not None:
                tags[TAG_GATE] = gate.model_dump_json()
            mv = self._client.create_model_version(name, source, run_id=run_id, tags=tags)
        except MlflowException as exc:
            raise StorageError(f"MLflow refused to register: {exc.message}", where=name) from exc
        version = self._to_version(mv)
        self._append(
            PromotionEvent(
                name=name,
                alias="",
                action="register",
                from_version=None,
                to_version=version.version,
                actor="dockline",
                reason=f"bundle {verified.bundle_id}"
                + ("" if gate is None else f"; gate {'passed' if gate.passed else 'failed'}")
                + ("" if gate is None else gate.slice_note()),
                at=created,
            )
        )
        return version

    def get(self, name: str, version: int) -> ModelVersion:
        """One version, with its bundle copied locally and verified."""
        return self._local_bundle(self._model_version(name, version))

    def versions(self, name: str) -> list[ModelVersion]:
        """Every version of ``name``, oldest first (``bundle_path``: where it goes locally)."""
        with _mlflow_warnings():
            found = self._client.search_model_versions(f"name = '{_quote(name)}'")
        if not found:
            return []
        # search results carry no aliases (MLflow fills them only on single-version reads)
        aliases: dict[int, list[str]] = {}
        with _mlflow_warnings():
            registered = self._client.get_registered_model(name)
        for alias, number in (registered.aliases or {}).items():
            aliases.setdefault(int(number), []).append(alias)
        versions = (self._to_version(mv) for mv in found)
        return sorted(
            (
                v.model_copy(update={"aliases": sorted(aliases.get(v.version, []))})
                for v in versions
            ),
            key=lambda v: v.version,
        )

    def resolve(self, name: str, alias: str) -> ModelVersion | None:
        """The version ``alias`` points at, with a verified local bundle; None when unset."""
        mv = self._alias_version(name, alias)
        return None if mv is None else self._local_bundle(mv)

    def peek(self, name: str, alias: str) -> ModelVersion | None:
        """The version ``alias`` points at, from the registry's metadata; no bundle is read."""
        mv = self._alias_version(name, alias)
        return None if mv is None else self._to_version(mv)

    # -- aliases and history ----------------------------------------------------------------

    def set_alias(
        self,
        name: str,
        alias: str,
        version: int | None,
        *,
        actor: str,
        reason: str,
        action: str,
        evidence: Mapping[str, Any] | None = None,
    ) -> PromotionEvent:
        """Point ``alias`` at ``version`` (None removes it) and append the move to the history,
        with ``evidence`` (what it was decided on). ``action="stage"`` records a phase of the
        version already holding ``alias`` without moving it."""
        if action not in _ACTIONS:
            raise ValidationError(
                f"action must be one of {', '.join(_ACTIONS)}; got {action!r}", reason="bad_value"
            )
        if not alias:
            raise ValidationError("alias must be non-empty", reason="bad_value")
        current = self._alias_version(name, alias)
        from_version = None if current is None else int(current.version)
        from mlflow.exceptions import MlflowException

        try:
            if version is None:
                if current is not None:
                    self._client.delete_registered_model_alias(name, alias)
            else:
                self._model_version(name, version)  # NotFoundError for an unknown version
                self._client.set_registered_model_alias(name, alias, str(version))
        except MlflowException as exc:
            raise StorageError(f"MLflow refused the alias: {exc.message}", where=name) from exc
        event = PromotionEvent(
            name=name,
            alias=alias,
            action=cast(_Action, action),
            from_version=from_version,
            to_version=version,
            actor=actor,
            reason=reason,
            at=self._now(),
            evidence=dict(evidence or {}),
        )
        self._append(event)
        return event

    def promote(
        self,
        name: str,
        version: int,
        *,
        actor: str,
        reason: str,
        alias: str = CHAMPION,
        evidence: Mapping[str, Any] | None = None,
    ) -> PromotionEvent:
        """Make ``version`` the ``alias`` (champion), only if its stored gate verdict passed."""
        target = self._to_version(self._model_version(name, version))
        if target.gate is None:
            raise ContractError(
                f"version {version} has no gate verdict; only a gated version can be promoted",
                reason="gate_missing",
                where=name,
            )
        if not target.gate.passed:
            raise ContractError(
                f"version {version} failed the promotion gate: " + "; ".join(target.gate.reasons),
                reason="gate_failed",
                where=name,
            )
        current = self._alias_version(name, alias)
        if current is not None and int(current.version) == version:
            raise ValidationError(
                f"version {version} is already {alias}", reason="no_change", where=name
            )
        return self.set_alias(
            name, alias, version, actor=actor, reason=reason, action="promote", evidence=evidence
        )

    def rollback(
        self, name: str, *, actor: str, reason: str, alias: str = CHAMPION
    ) -> PromotionEvent:
        """Point ``alias`` back at the version it held before its current one (from history).

        The history is replayed as a stack: a move pushes, a rollback pops, so successive
        rollbacks walk further back rather than undoing each other.
        """
        stack = _alias_stack(self.history(name), alias)
        current = self._alias_version(name, alias)
        current_version = None if current is None else int(current.version)
        if stack[-1] != current_version:
            raise ContractError(
                f"the history's {alias} ({stack[-1]}) is not the registry's"
                f" ({current_version}); the alias was moved outside dockline",
                reason="history_mismatch",
                where=name,
            )
        if len(stack) < 2 or stack[-2] is None:
            raise NotFoundError(
                f"no previous {alias} to roll back to", reason="no_previous_version", where=name
            )
        return self.set_alias(name, alias, stack[-2], actor=actor, reason=reason, action="rollback")

    def history(self, name: str) -> list[PromotionEvent]:
        """The alias history of ``name``, oldest first."""
        if not self.history_path.exists():
            return []
        events = []
        with self.history_path.open("rb") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    event = PromotionEvent.model_validate_json(line)
                except ValueError as exc:
                    raise ContractError(
                        f"line {number} is not a PromotionEvent: {str(exc).splitlines()[0]}",
                        reason="bad_history",
                        where=str(self.history_path),
                    ) from exc
                if event.name == name:
                    events.append(event)
        return events

    # -- internals ----------------------------------------------------------------------------

    def _now(self) -> datetime:
        return ensure_utc(self._clock.now())

    def _append(self, event: PromotionEvent) -> None:
        line = (event.model_dump_json() + "\n").encode()
        path = self.history_path
        path.parent.mkdir(parents=True, exist_ok=True)
        created = not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            # The lock keeps concurrent writers' lines whole (CLI and serving admin endpoints).
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def _experiment_id(self, experiment: str) -> str:
        found = self._client.get_experiment_by_name(experiment)
        if found is not None:
            return str(found.experiment_id)
        location = (self.artifact_root / _safe_dirname(experiment)).resolve().as_uri()
        return str(self._client.create_experiment(experiment, artifact_location=location))

    def _ensure_model(self, name: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self._client.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            with contextlib.suppress(MlflowException):  # a concurrent register created it
                self._client.create_registered_model(name)

    def _model_version(self, name: str, version: int) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return self._client.get_model_version(name, str(version))
        except MlflowException as exc:
            if exc.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
                raise NotFoundError(
                    f"no version {version} of model {name!r}", reason="unknown_version", where=name
                ) from None
            raise StorageError(f"MLflow: {exc.message}", where=name) from exc

    def _alias_version(self, name: str, alias: str) -> Any | None:
        from mlflow.exceptions import MlflowException

        try:
            return self._client.get_model_version_by_alias(name, alias)
        except MlflowException as exc:
            if exc.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
                return None
            raise StorageError(f"MLflow: {exc.message}", where=name) from exc

    def _to_version(self, mv: Any) -> ModelVersion:
        tags: dict[str, str] = dict(mv.tags or {})
        bundle_id = tags.get(TAG_BUNDLE_ID)
        if not bundle_id:
            raise ContractError(
                f"version {mv.version} has no {TAG_BUNDLE_ID} tag; not registered by dockline",
                where=str(mv.name),
            )
        gate = GateVerdict.model_validate_json(tags[TAG_GATE]) if TAG_GATE in tags else None
        if TAG_CREATED_AT in tags:
            created = datetime.fromisoformat(tags[TAG_CREATED_AT])
        else:
            created = from_micros(int(mv.creation_timestamp) * 1000)
        return ModelVersion(
            name=str(mv.name),
            version=int(mv.version),
            bundle_id=bundle_id,
            bundle_path=str(self.bundles_root / bundle_id),
            run_id=mv.run_id or None,
            created_at=created,
            gate=gate,
            aliases=sorted(mv.aliases or []),
        )

    def _local_bundle(self, mv: Any) -> ModelVersion:
        """The version, once its bundle is in ``bundles_root`` and verified."""
        version = self._to_version(mv)
        target = Path(version.bundle_path)
        if not target.exists():
            self._fetch(str(mv.source), target)
        bundle: Bundle = load_bundle(target)
        if bundle.bundle_id != version.bundle_id:
            raise ContractError(
                f"bundle at {target} is {bundle.bundle_id}, the registry says {version.bundle_id}",
                reason="bundle_tampered",
                where=version.name,
            )
        return version

    def _fetch(self, source: str, target: Path) -> None:
        import mlflow.artifacts
        from mlflow.exceptions import MlflowException

        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            mlflow.artifacts.download_artifacts(
                artifact_uri=source, dst_path=str(staging), tracking_uri=self.tracking_uri
            )
            # download_artifacts nests the artifact directory's name inside dst_path.
            (inner,) = [p for p in staging.iterdir()]
            load_bundle(inner)  # verify before it becomes visible to readers
            os.replace(inner, target)
        except MlflowException as exc:
            raise StorageError(
                f"cannot fetch the bundle from {source}: {exc.message}", where=str(target)
            ) from exc
        except OSError:
            if not target.exists():  # another process may have won the race with the same bytes
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)


# Every column in which MLflow's SQL store keeps an artifact location (absolute URIs).
_LOCATION_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("model_versions", "source"),
    ("model_versions", "storage_location"),
    ("logged_models", "artifact_location"),
)
_ARTIFACTS_MARKER = "/mlruns/artifacts"


def relocate_artifacts(db_path: Path, artifacts_root: Path) -> int:
    """Re-point artifact locations under another ``…/mlruns/artifacts`` at ``artifacts_root``.

    MLflow resolves every artifact location to an absolute ``file://`` URI when it stores it,
    so a data dir copied elsewhere would keep reading — and training would keep writing — the
    original's artifacts. This rewrites the prefix up to ``/mlruns/artifacts`` of locations that
    point at another data dir; a no-op (one read) when the data dir has not moved. Returns the
    number of rows changed.
    """
    if not db_path.exists():
        return 0
    here = artifacts_root.resolve().as_uri()
    changed = 0
    try:
        with contextlib.closing(sqlite3.connect(db_path, timeout=30)) as con, con:
            tables = {
                row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            for table, column in _LOCATION_COLUMNS:
                if table not in tables:
                    continue
                if column not in {row[1] for row in con.execute(f"PRAGMA table_info({table})")}:
                    continue
                prefixes = set()
                for (value,) in con.execute(
                    f"SELECT DISTINCT {column} FROM {table} WHERE {column} LIKE 'file://%'"
                ):
                    end = str(value).find(_ARTIFACTS_MARKER + "/")
                    if end < 0 and str(value).endswith(_ARTIFACTS_MARKER):
                        end = len(str(value)) - len(_ARTIFACTS_MARKER)
                    if end >= 0:
                        prefix = str(value)[: end + len(_ARTIFACTS_MARKER)]
                        if prefix != here:
                            prefixes.add(prefix)
                for prefix in prefixes:
                    changed += con.execute(
                        f"UPDATE {table} SET {column} = ? || substr({column}, ?)"
                        f" WHERE substr({column}, 1, ?) = ?",
                        (here, len(prefix) + 1, len(prefix), prefix),
                    ).rowcount
    except sqlite3.Error as exc:
        raise StorageError(
            f"cannot re-point MLflow's artifact locations: {exc}", where=str(db_path)
        ) from exc
    return changed


def _alias_stack(events: list[PromotionEvent], alias: str) -> list[int | None]:
    """Successive holders of ``alias``: moves push (None for a removal), rollbacks pop."""
    stack: list[int | None] = [None]  # before any move, nothing held the alias
    for event in events:
        if event.alias != alias or event.action == "stage":
            continue  # a stage record does not move the alias
        if event.action == "rollback" and len(stack) > 1:
            stack.pop()
        else:
            stack.append(event.to_version)
    return stack


def _quote(name: str) -> str:
    return name.replace("'", "''")


def _safe_dirname(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "_"

"""Crash recovery of serving's in-memory telemetry: a checkpoint per process, read by the next.

The metrics windows in progress and the prediction log's queue live in memory between writes.
Every tick (≤ 1 s) the writer thread saves a checkpoint of them to
``serving/state/<pid>-<id>.ckpt`` (written aside and renamed: whole or absent) while the
process holds an exclusive lock on ``<pid>-<id>.lock``; the kernel releases the lock when the
process dies, however it dies. A starting server (:func:`recover`) takes over the checkpoint of
every predecessor whose lock is free:

* its windows (as of the checkpoint) are written, or merged into the current window when the
  predecessor was this same deployment in this same minute (one window per key, as monitoring
  expects); windows already on disk are not written twice;
* its prediction-log rows accepted and never written are counted as missing
  (``dockline_serving_restart_missing_total{sink="prediction_log"}``), and the ``.tmp`` files
  its killed writer left are removed and counted as partial;
* a metrics file it left ending in a cut line is closed with a newline and counted as partial.

What is lost to a ``kill -9`` is bounded by one interval: the rows of the prediction log not yet
flushed (``prediction_flush_interval``) and the requests of the last checkpoint interval, which
the restart cannot know about. A host crash can lose more (nothing is fsynced).
"""

from __future__ import annotations

import fcntl
import logging
import os
import uuid
from array import array
from dataclasses import dataclass
from pathlib import Path

import msgspec

from dockline.core.contracts import ServingMetricsWindow
from dockline.core.time import from_micros, to_micros
from dockline.serve._predlog import PredictionLog
from dockline.serve._telemetry import (
    METRICS_SINK,
    PREDICTION_LOG_SINK,
    ModelStamp,
    ServiceIdentity,
    Telemetry,
    WindowCounts,
    window_path,
)

__all__ = ["CrashCheckpoint", "RecoveryReport", "recover"]

_FORMAT = 1
_log = logging.getLogger(__name__)


class _Window(msgspec.Struct, frozen=True):
    endpoint: str
    start_us: int
    end_us: int
    counts: dict[str, int]
    latencies: bytes  # float64 milliseconds, machine order


class _State(msgspec.Struct, frozen=True):
    format: int
    pid: int
    saved_us: int
    identity: tuple[str, str, str, str]
    stamp: tuple[str, str, str, str, str]
    windows: list[_Window]
    unwritten: list[bytes]  # ServingMetricsWindow JSON whose write had failed
    files: list[str]  # metrics files appended to last (a kill may have cut their last line)
    log_accepted: int
    log_written: int
    log_dropped: int


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(_State).decode


def _window(endpoint: str, counts: WindowCounts) -> _Window:
    return _Window(
        endpoint, counts.start_us, counts.end_us, dict(counts.counts), counts.latencies_ms.tobytes()
    )


class CrashCheckpoint:
    """This process's checkpoint of ``telemetry`` and ``prediction_log`` under ``state_dir``."""

    def __init__(
        self, state_dir: Path, telemetry: Telemetry, prediction_log: PredictionLog
    ) -> None:
        self.state_dir = state_dir
        self.telemetry = telemetry
        self.prediction_log = prediction_log
        self.name = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.path = state_dir / f"{self.name}.ckpt"
        self.lock_path = state_dir / f"{self.name}.lock"
        state_dir.mkdir(parents=True, exist_ok=True)
        # Locked before it is visible under its name: a recovery running beside us (another
        # worker starting) must never see our lock file free.
        hidden = state_dir / f".{self.name}.lock"
        self._fd: int | None = os.open(hidden, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.replace(hidden, self.lock_path)
        self._saved: tuple[int, int, int, int] | None = None
        self._failing = False

    def save(self) -> None:
        """Write the checkpoint if anything changed since the last one (called every tick)."""
        telemetry, log = self.telemetry, self.prediction_log
        key = (telemetry.generation, log.accepted, log.written, log.dropped)
        if key == self._saved:
            return
        windows, files = telemetry.snapshot()
        identity, stamp = telemetry.identity, telemetry.model_stamp()
        state = _State(
            format=_FORMAT,
            pid=os.getpid(),
            saved_us=to_micros(telemetry.clock.now()),
            identity=(
                identity.service_name,
                identity.service_version,
                identity.environment,
                identity.deployment_id,
            ),
            stamp=(
                stamp.model_name,
                stamp.model_version,
                stamp.bundle_id,
                stamp.input_dataset_name,
                stamp.input_dataset_version,
            ),
            windows=[_window(e, w) for e, w in windows],
            unwritten=[w.model_dump_json().encode() for w in telemetry.unwritten],
            files=[str(f) for f in files],
            log_accepted=key[1],
            log_written=key[2],
            log_dropped=key[3],
        )
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_bytes(_encode(state))
            os.replace(tmp, self.path)
        except OSError as exc:
            if not self._failing:
                _log.warning("cannot save the serving crash checkpoint: %s", exc)
            self._failing = True
            return
        self._failing = False
        self._saved = key

    def close(self) -> None:
        """At a clean shutdown: keep the checkpoint only if windows are still unwritten (the
        next start retries them), then release the lock."""
        if self._fd is None:
            return
        try:
            if self.telemetry.unwritten:
                self._saved = None
                self.save()
            else:
                self.path.unlink(missing_ok=True)
            self.lock_path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None


@dataclass
class RecoveryReport:
    """What a start found left behind by predecessors that did not stop cleanly."""

    predecessors: int = 0
    windows_recovered: int = 0
    windows_merged: int = 0
    rows_missing: int = 0
    partial_files: int = 0


def _locked_by_someone(lock: Path) -> tuple[bool, int | None]:
    """(alive, fd): ``fd`` holds the dead one's lock while we take its files over."""
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return False, None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return True, None
    return False, fd


def _keys_in(path: Path) -> set[tuple[str, str, str, str]]:
    keys: set[tuple[str, str, str, str]] = set()
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        return keys
    for line in lines:
        try:
            w = msgspec.json.decode(line)
            keys.add((w["deployment_id"], w["endpoint_name"], w["window_start"], w["window_end"]))
        except (msgspec.DecodeError, KeyError, TypeError):
            continue  # a bad line: monitoring reports it, it holds no window
    return keys


def _close_torn(path: Path) -> bool:
    try:
        with path.open("rb+") as fh:
            if fh.seek(0, os.SEEK_END) == 0:
                return False
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) == b"\n":
                return False
            fh.write(b"\n")
            return True
    except FileNotFoundError:
        return False


def recover(
    state_dir: Path, telemetry: Telemetry, predictions_dir: Path | None, *, own: str = ""
) -> RecoveryReport:
    """Take over the checkpoints of dead predecessors (see the module docstring); counts go to
    ``telemetry``'s Prometheus counters and one log line per predecessor."""
    report = RecoveryReport()
    if not state_dir.is_dir():
        return report
    names = {p.stem for p in state_dir.glob("*.lock")} | {p.stem for p in state_dir.glob("*.ckpt")}
    for name in sorted(names - {own}):
        alive, fd = _locked_by_someone(state_dir / f"{name}.lock")
        if alive:
            continue
        try:
            _take_over(state_dir, name, telemetry, predictions_dir, report)
        finally:
            for suffix in (".ckpt", ".tmp", ".lock"):
                (state_dir / f"{name}{suffix}").unlink(missing_ok=True)
            if fd is not None:
                os.close(fd)
    return report


def _take_over(
    state_dir: Path,
    name: str,
    telemetry: Telemetry,
    predictions_dir: Path | None,
    report: RecoveryReport,
) -> None:
    report.predecessors += 1
    ckpt = state_dir / f"{name}.ckpt"
    partial = 0
    try:
        state = _decode(ckpt.read_bytes())
    except FileNotFoundError:
        _log.warning("serving process %s stopped before its first checkpoint: nothing known", name)
        return
    except msgspec.MsgspecError as exc:
        telemetry.partial_files.labels(METRICS_SINK).inc()
        report.partial_files += 1
        _log.warning("the crash checkpoint of serving process %s is unreadable: %s", name, exc)
        return
    if state.format != _FORMAT:
        _log.warning("the crash checkpoint of %s has format %s; skipped", name, state.format)
        return

    # Metrics files it was appending to when it died may end in a cut line.
    for file in state.files:
        if _close_torn(Path(file)):
            partial += 1
            telemetry.partial_files.labels(METRICS_SINK).inc()

    # Its windows: merged into ours when they are our current ones, else written once.
    identity = ServiceIdentity(*state.identity)
    stamp = ModelStamp(*state.stamp)
    pending: list[ServingMetricsWindow] = []
    merged = 0
    for w in state.windows:
        idle = not any(w.counts.values())
        if idle and w.end_us > state.saved_us:
            continue  # a minute it did not live to finish, with nothing in it
        latencies = array("d")
        latencies.frombytes(w.latencies)
        if identity.deployment_id == telemetry.identity.deployment_id and telemetry.merge(
            w.endpoint, w.start_us, w.counts, latencies
        ):
            merged += 1
            continue
        counts = WindowCounts(w.start_us, w.end_us)
        counts.counts.update(w.counts)
        counts.latencies_ms = latencies
        pending.append(counts.to_window(w.endpoint, identity, stamp, state.saved_us))
    pending.extend(ServingMetricsWindow.model_validate_json(line) for line in state.unwritten)
    if telemetry.metrics_dir is not None:
        seen: dict[Path, set[tuple[str, str, str, str]]] = {}
        fresh = []
        for window in pending:
            path = window_path(telemetry.metrics_dir, window)
            keys = seen.setdefault(path, _keys_in(path))
            dumped = window.model_dump(mode="json")
            key = (
                window.deployment_id,
                window.endpoint_name,
                dumped["window_start"],
                dumped["window_end"],
            )
            if key not in keys:  # written after its checkpoint, before it died
                fresh.append(window)
        pending = fresh
    telemetry.emit(pending)
    recovered = len(pending) + merged
    telemetry.restart_recovered.labels(METRICS_SINK).inc(recovered)

    # Its prediction log: rows accepted and never written are gone; .tmp files are partial.
    missing = max(0, state.log_accepted - state.log_written - state.log_dropped)
    telemetry.restart_missing.labels(PREDICTION_LOG_SINK).inc(missing)
    if predictions_dir is not None and predictions_dir.is_dir():
        for tmp in predictions_dir.glob(f"date=*/part-*-{state.pid}-*.parquet.tmp"):
            tmp.unlink(missing_ok=True)
            partial += 1
            telemetry.partial_files.labels(PREDICTION_LOG_SINK).inc()

    report.windows_recovered += recovered
    report.windows_merged += merged
    report.rows_missing += missing
    report.partial_files += partial
    _log.warning(
        "serving process %s did not stop cleanly (last checkpoint %s): %d metrics windows"
        " recovered (%d merged into the current ones), %d prediction-log rows lost, %d partial"
        " files repaired or removed; requests of its last checkpoint interval are not known",
        name,
        from_micros(state.saved_us).isoformat(),
        recovered,
        merged,
        missing,
        partial,
    )

"""The Dagster code location: ``dagster dev -m dockline.orchestration.defs``.

The data directory is ``$DOCKLINE_DATA_DIR`` (else ``./.dockline``), read when a run starts;
override it per run with the ``dockline`` resource's ``data_dir``.
"""

from __future__ import annotations

from dagster import Definitions

from dockline.orchestration.assets import ALL_ASSETS
from dockline.orchestration.automation import (
    ingest_job,
    ingest_schedule,
    loop_job,
    loop_schedule,
    monitoring_job,
    monitoring_schedule,
    retraining_sensor,
    training_job,
    training_schedule,
)
from dockline.orchestration.resources import DocklineResource

__all__ = ["defs"]

defs = Definitions(
    assets=ALL_ASSETS,
    jobs=[ingest_job, training_job, monitoring_job, loop_job],
    schedules=[ingest_schedule, monitoring_schedule, training_schedule, loop_schedule],
    sensors=[retraining_sensor],
    resources={"dockline": DocklineResource()},
)

"""dockline.orchestration: the platform as Dagster definitions (the ``orchestrate`` extra).

Wiring, like :mod:`dockline.pipeline` (whose functions every asset calls): assets for the
offline store, the online vectors, training sets, models and monitoring results; a job per
part; schedules; and a sensor that requests the training job when a retraining trigger fires.

    pip install 'dockline[orchestrate]'
    DOCKLINE_DATA_DIR=.dockline dagster dev -m dockline.orchestration.defs
"""

from dockline.orchestration.resources import DocklineResource

__all__ = ["DocklineResource"]

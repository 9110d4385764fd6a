"""dockline.serve: predictions from fresh online features, over HTTP.

The FastAPI app (:func:`create_app`) answers ``POST /v1/predict`` and ``/v1/predict/batch``
from the online store's latest vectors and the registry's ``champion`` bundle (ONNX, verified
by SHA-256, hot-reloaded on promotion), gates stale features, routes shadow and canary traffic
to a ``challenger``, and reports Prometheus metrics, serving metrics windows and a Parquet
prediction log. It imports only ``dockline.core``: the wiring layer passes in the store and the
registry.
"""

from dockline.serve._errors import REASON_STATUS, ServeError
from dockline.serve._http import read_body
from dockline.serve._predlog import PREDICTION_LOG_SCHEMA, PredictionLog
from dockline.serve._protocol import GuardedHttpProtocol, configure_protocol, uvicorn_options
from dockline.serve._runtime import BASELINE_FILE, Baseline, LoadedModel, ModelRuntime, ModelSet
from dockline.serve._service import Predictor, Routing, canary_bucket
from dockline.serve._telemetry import Telemetry
from dockline.serve.app import ADMIN_TOKEN_ENV, create_app

__all__ = [
    "ADMIN_TOKEN_ENV",
    "BASELINE_FILE",
    "PREDICTION_LOG_SCHEMA",
    "REASON_STATUS",
    "Baseline",
    "GuardedHttpProtocol",
    "LoadedModel",
    "ModelRuntime",
    "ModelSet",
    "PredictionLog",
    "Predictor",
    "Routing",
    "ServeError",
    "Telemetry",
    "canary_bucket",
    "configure_protocol",
    "create_app",
    "read_body",
    "uvicorn_options",
]

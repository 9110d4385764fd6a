"""dockline.train: splits, candidates, tuning, calibration, evaluation, ONNX export, MLflow
tracking and registry, the promotion gate and serving bundles.

Heavy libraries (MLflow, skl2onnx, onnxruntime) are imported where they are used, so importing
this package stays cheap.
"""

from dockline.train.data import TrainingData, load_training_set
from dockline.train.export import (
    HourOfWeekRates,
    build_bundle,
    drift_baseline,
    export_onnx,
    parity,
)
from dockline.train.gate import evaluate_gate
from dockline.train.mlflow_log import log_candidate_run
from dockline.train.registry import CHALLENGER, CHAMPION, MlflowRegistry
from dockline.train.trainer import CandidateResult, TrainOutcome, train_candidates

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "CandidateResult",
    "HourOfWeekRates",
    "MlflowRegistry",
    "TrainOutcome",
    "TrainingData",
    "build_bundle",
    "drift_baseline",
    "evaluate_gate",
    "export_onnx",
    "load_training_set",
    "log_candidate_run",
    "parity",
    "train_candidates",
]

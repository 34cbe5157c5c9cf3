"""The YAHPO Gym LCBench surrogate read directly with onnxruntime (no yahpo-gym package: it pins numpy < 2).

Inputs as yahpo-gym 1.0.2 feeds them (`BenchmarkSet._config_to_xs`): `x_cont` holds the raw values of
`epoch, batch_size, learning_rate, momentum, weight_decay, num_layers, max_units, max_dropout` in that order
(the ONNX graph applies its own log transforms and scaling), `x_cat` the task id through `encoding.json`.
Outputs in order: time, val_accuracy, val_cross_entropy, val_balanced_accuracy, test_cross_entropy,
test_balanced_accuracy. The search space follows `config_space.json` (log scales for batch_size,
learning_rate and max_units).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from mal.automl.space import SearchSpace

DATA_DIR = Path(os.environ.get("MAL_YAHPO_LCBENCH", "/work/shared/data/yahpo_lcbench"))
CONT_NAMES = (
    "epoch",
    "batch_size",
    "learning_rate",
    "momentum",
    "weight_decay",
    "num_layers",
    "max_units",
    "max_dropout",
)
OUTPUTS = (
    "time",
    "val_accuracy",
    "val_cross_entropy",
    "val_balanced_accuracy",
    "test_cross_entropy",
    "test_balanced_accuracy",
)
MAX_EPOCH = 52


def lcbench_space(data_dir: Path = DATA_DIR) -> SearchSpace:
    """The 7 non-fidelity hyperparameters, with config_space.json's ranges and log scales."""
    config = json.loads((data_dir / "config_space.json").read_text())
    properties = {}
    for hp in config["hyperparameters"]:
        if hp["name"] in ("OpenML_task_id", "epoch"):
            continue
        kind = "integer" if hp["type"] == "uniform_int" else "number"
        properties[hp["name"]] = {
            "type": kind,
            "minimum": hp["lower"],
            "maximum": hp["upper"],
            "log_scale": bool(hp["log"]),
            "default": hp["default"],
        }
    return SearchSpace.from_schema({"properties": properties}, parameters=list(properties))


def lcbench_tasks(data_dir: Path = DATA_DIR) -> list[str]:
    """Every OpenML task id the surrogate knows (encoding.json), in its order."""
    encoding = json.loads((data_dir / "encoding.json").read_text())
    return [task for task in encoding["OpenML_task_id"] if task != "#na#"]


class LCBench:
    """Learning curves (val_accuracy per epoch 1..52) of one LCBench task, cached per configuration."""

    def __init__(self, task: str, data_dir: Path = DATA_DIR) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(data_dir / "model.onnx"), options, providers=["CPUExecutionProvider"])
        encoding = json.loads((data_dir / "encoding.json").read_text())
        self.task_code = int(encoding["OpenML_task_id"][task])
        self.task = task
        self._cache: dict[tuple, np.ndarray] = {}

    def curve(self, params: dict) -> np.ndarray:
        key = tuple(params[name] for name in CONT_NAMES[1:])
        if key not in self._cache:
            epochs = np.arange(1, MAX_EPOCH + 1, dtype=np.float32)
            x_cont = np.empty((MAX_EPOCH, len(CONT_NAMES)), dtype=np.float32)
            x_cont[:, 0] = epochs
            x_cont[:, 1:] = np.asarray(key, dtype=np.float32)
            x_cat = np.full((MAX_EPOCH, 1), self.task_code, dtype=np.int32)
            out = self.session.run(None, {"x_cat": x_cat, "x_cont": x_cont})[0]
            self._cache[key] = out[:, OUTPUTS.index("val_accuracy")].astype(float)
        return self._cache[key]


def worst_final_accuracy(task: str, samples: int = 1000, seed: int = 0, data_dir: Path = DATA_DIR) -> float:
    """The lowest 52-epoch val_accuracy among `samples` random configurations of one task (a fixed draw): the
    bottom of the range that normalised regret divides by."""
    bench, space = LCBench(task, data_dir), lcbench_space(data_dir)
    rng = np.random.default_rng(seed)
    return float(min(bench.curve(space.sample(rng))[-1] for _ in range(samples)))

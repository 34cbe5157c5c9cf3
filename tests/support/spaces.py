"""Small search spaces for the algorithm tests."""

from __future__ import annotations

from mal.automl.space import SearchSpace

# train.lr and train.wd, TAO's default AutoML parameters for MAL, on log-worthy ranges.
LR_WD = SearchSpace.from_schema(
    {
        "properties": {
            "train": {
                "properties": {
                    "lr": {"type": "number", "default": 1e-6, "minimum": 1e-7, "maximum": 1e-5},
                    "wd": {"type": "number", "default": 5e-4, "minimum": 1e-5, "maximum": 1e-2},
                }
            }
        },
        "automl_default_parameters": ["train.lr", "train.wd"],
    },
)

"""Generate the TAO skill layout and the spec reference from the spec models.

`write_skill_dir(out)` writes:
    schemas/<action>.schema.json   JSON schema of the spec, with TAO's AutoML leaf annotations
    schemas/manifest.json          what was written, for tools that read the skill
    references/spec_template_<action>.yaml   the defaults, commented; loading it gives the defaults back
    references/skill_info.yaml     the actions (command, inputs, outputs, metric, KPIs), the AutoML policy and
                                   where a training's checkpoints are
    SKILL.md                       the same for a reader: actions, AutoML, every spec key (`mal.spec.skill_markdown`)
`spec_reference_markdown()` renders docs/SPEC.md.
"""

from __future__ import annotations

import json
import types
import typing
from pathlib import Path
from typing import Any, Literal

import annotated_types
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from mal import __version__, jobfiles
from mal.fileio import atomic_write_text
from mal.spec.schema import ACTIONS, AUTOML_DEFAULT_PARAMETERS, SECTION_DOCS, ExperimentSpec
from mal.spec.skill_markdown import skill_markdown

# Where a training's checkpoints are, as `{results_dir}` templates. The names come from `mal.jobfiles`, the module
# the engine writes them with, so the skill cannot name a file the training does not write.
_TRAIN_DIR = f"{{results_dir}}/{jobfiles.TRAIN_DIR}"
BEST_CHECKPOINT_PATH = f"{_TRAIN_DIR}/{jobfiles.BEST_CHECKPOINT}"
LATEST_CHECKPOINT_PATH = f"{_TRAIN_DIR}/{jobfiles.LATEST_CHECKPOINT}"
EPOCH_CHECKPOINT_PATH = f"{_TRAIN_DIR}/{jobfiles.EPOCH_CHECKPOINT.replace('{epoch:03d}', '{NNN}')}"
RESUME_KEY = "train.resume_training_checkpoint_path"

# The KPIs each action's status.json `kpi` may report. mal.spec may not import the engine (import-linter), so
# they are listed here and tests/spec/test_skill_layout.py checks them against a real run: train's are the
# `self.log` keys of mal.engine.module (val/* only in epochs that validated); evaluate's are the float values of
# its metrics.json (mal.engine.evaluate.score_labels: mIoU by size, the box-fill baseline, COCO mask AP, seconds);
# inference reports its throughput; export reports none.
TRAIN_KPIS = ["train/loss", "train/loss_mil", "train/loss_crf", "train/lr", "val/mIoU", "val/instances",
              "val/box_like_share"]
EVALUATE_KPIS = ["mIoU", "mIoU_small", "mIoU_medium", "mIoU_large", "box_fill_mIoU",
                 "AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "seconds", "box_like_share"]

ACTION_INFO: dict[str, dict[str, Any]] = {
    "train": {
        "description": "Train the box-supervised ViT (student + EMA teacher) on the boxes of a COCO file.",
        "inputs": ["dataset.train_ann_path", "dataset.train_img_dir", "dataset.val_ann_path",
                   "dataset.val_img_dir", "train.pretrained_model_path"],
        "outputs": [f"{_TRAIN_DIR}/{jobfiles.STATUS_FILE}", EPOCH_CHECKPOINT_PATH, LATEST_CHECKPOINT_PATH,
                    BEST_CHECKPOINT_PATH],
        "metric": "val/mIoU",
        "direction": "maximize",
        "kpis": TRAIN_KPIS,
        "automl_enabled": True,
    },
    "evaluate": {
        "description": "Score the masks of a checkpoint against ground truth: mIoU (overall, by size, per class) "
        "and COCO mask AP.",
        "inputs": ["evaluate.checkpoint", "dataset.val_ann_path", "dataset.val_img_dir"],
        "outputs": ["{results_dir}/evaluate/metrics.json", "{results_dir}/evaluate/status.json"],
        "metric": "mIoU",
        "direction": "maximize",
        "kpis": EVALUATE_KPIS,
        "automl_enabled": True,
    },
    "inference": {
        "description": "Write the auto-labels: the input COCO JSON with an RLE mask on every box.",
        "inputs": ["inference.checkpoint", "inference.ann_path", "inference.img_dir"],
        "outputs": ["inference.label_dump_path", "{results_dir}/inference/status.json"],
        "kpis": ["boxes", "boxes_per_second", "box_like_share"],
        "automl_enabled": False,
    },
    "export": {
        "description": "Export the inference network to ONNX (crop batch in, mask logits out).",
        "inputs": ["export.checkpoint"],
        "outputs": ["export.onnx_file", "{results_dir}/export/status.json"],
        "kpis": [],
        "automl_enabled": False,
    },
}

_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string"}


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _type_schema(annotation: Any) -> dict[str, Any]:
    inner, nullable = _strip_optional(annotation)
    origin = typing.get_origin(inner)
    if origin is Literal:
        choices = list(typing.get_args(inner))
        schema: dict[str, Any] = {"type": _JSON_TYPES[type(choices[0])], "enum": choices}
    elif origin is list:
        (item,) = typing.get_args(inner)
        # list[Annotated[float, Field(ge=..., lt=...)]]: the bounds of every item go into "items".
        item_type, *item_meta = typing.get_args(item) if typing.get_origin(item) is typing.Annotated else (item,)
        items = {"type": _JSON_TYPES[item_type]}
        for meta in item_meta:
            if isinstance(meta, FieldInfo):
                items.update(_bounds(meta))
        schema = {"type": "array", "items": items}
    elif inner in _JSON_TYPES:
        schema = {"type": _JSON_TYPES[inner]}
    else:  # pragma: no cover - a new field type must be taught here
        raise TypeError(f"no JSON schema type for {annotation!r}")
    if nullable:
        schema["type"] = [schema["type"], "null"]
        if "enum" in schema:
            schema["enum"].append(None)
    return schema


def _bounds(info: FieldInfo) -> dict[str, Any]:
    bounds: dict[str, Any] = {}
    for item in info.metadata:
        if isinstance(item, annotated_types.Ge):
            bounds["minimum"] = item.ge
        elif isinstance(item, annotated_types.Gt):
            bounds["exclusiveMinimum"] = item.gt
        elif isinstance(item, annotated_types.Le):
            bounds["maximum"] = item.le
        elif isinstance(item, annotated_types.Lt):
            bounds["exclusiveMaximum"] = item.lt
        elif isinstance(item, annotated_types.MinLen):
            bounds["minItems"] = item.min_length
        elif isinstance(item, annotated_types.MaxLen):
            bounds["maxItems"] = item.max_length
    return bounds


def _default(info: FieldInfo) -> Any:
    return info.get_default(call_default_factory=True)


def leaf_schema(info: FieldInfo) -> dict[str, Any]:
    """One leaf in TAO's format. `minimum`/`maximum` are AutoML's search range where one is declared."""
    schema = _type_schema(info.annotation)
    schema["default"] = _default(info)
    if info.description:
        schema["description"] = info.description
    bounds = _bounds(info)
    extra = dict(info.json_schema_extra or {})  # type: ignore[arg-type]
    search_range = extra.pop("automl_range", None)
    if search_range is not None:
        # Hard validity limits stay available as valid_min/valid_max; the search range is what TAO reads.
        for hard, name in (("minimum", "valid_min"), ("exclusiveMinimum", "valid_min"),
                           ("maximum", "valid_max"), ("exclusiveMaximum", "valid_max")):
            if hard in bounds:
                schema[name] = bounds.pop(hard)
        schema["minimum"], schema["maximum"] = search_range
    schema.update(bounds)
    schema["automl_enabled"] = bool(extra.pop("automl_enabled", False))
    schema.update(extra)
    return schema


def _model_schema(model: type[BaseModel], prefix: str, defaults_only: bool = False) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            section = _model_schema(annotation, f"{prefix}{name}.")
            if name in SECTION_DOCS:
                section["description"] = SECTION_DOCS[name]
            properties[name] = section
        else:
            properties[name] = leaf_schema(info)
    return {"type": "object", "additionalProperties": False, "properties": properties}


def automl_enabled_keys() -> list[str]:
    from mal.spec.load import iter_keys

    return [key for key, info in iter_keys(ExperimentSpec) if (info.json_schema_extra or {}).get("automl_enabled")]


def action_schema(action: str) -> dict[str, Any]:
    schema = _model_schema(ExperimentSpec, "")
    enabled = automl_enabled_keys() if ACTION_INFO[action]["automl_enabled"] else []
    from mal.spec.load import all_keys

    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"mal {action}",
        "description": ACTION_INFO[action]["description"],
        **schema,
        "default": ExperimentSpec().model_dump(mode="json"),
        "automl_default_parameters": list(AUTOML_DEFAULT_PARAMETERS) if enabled else [],
        "automl_enabled_parameters": enabled,
        "automl_disabled_parameters": [key for key in all_keys() if key not in enabled],
        "popular": list(AUTOML_DEFAULT_PARAMETERS),
    }


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, list):
        return json.dumps(value)
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def spec_template(action: str) -> str:
    """The defaults as commented YAML; loading it back gives the defaults."""
    lines = [
        f"# mal {action} spec template (generated by `mal schema`; mal {__version__}).",
        f"# Run: mal {action} -e this_file.yaml [section.key=value ...]",
    ]

    def emit(model: type[BaseModel], indent: str) -> None:
        for name, info in model.model_fields.items():
            annotation = info.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                lines.append("")
                if name in SECTION_DOCS:
                    lines.append(f"{indent}# {SECTION_DOCS[name]}")
                lines.append(f"{indent}{name}:")
                emit(annotation, indent + "  ")
            else:
                for text in (info.description or "").splitlines():
                    lines.append(f"{indent}# {text.strip()}")
                lines.append(f"{indent}{name}: {_yaml_scalar(_default(info))}")

    emit(ExperimentSpec, "")
    return "\n".join(lines) + "\n"


def action_kpis(action: str) -> list[str]:
    """The KPI names `action`'s status.json `kpi` may report (skill_info.yaml's `actions.<action>.kpis`)."""
    if action not in ACTION_INFO:
        raise ValueError(f"unknown action {action!r}; the skill describes {', '.join(ACTION_INFO)}")
    return list(ACTION_INFO[action]["kpis"])


def automl_policy() -> dict[str, Any]:
    """What a runner should do when a user asks for AutoML without saying how (skill_info.yaml's
    `automl_policy`). The values match mal.automl's own defaults (AutoMLSettings, automl.yaml), which mal.spec may
    not import; tests/spec/test_skill_layout.py checks they agree."""
    train = ACTION_INFO["train"]
    return {
        "default_algorithm": "bayesian",
        "metric": train["metric"],
        "direction": train["direction"],
        "metric_action": "train",
        "default_parameters": list(AUTOML_DEFAULT_PARAMETERS),
        "enabled_parameters": automl_enabled_keys(),
        "epochs_key": "train.num_epochs",
        "results_dir_key": "results_dir",
        "resume_checkpoint_key": RESUME_KEY,
    }


def checkpoint_locations() -> dict[str, Any]:
    """Where a training's checkpoints are and which spec keys take them (skill_info.yaml's `checkpoints`)."""
    return {
        "action": "train",
        "dir": _TRAIN_DIR,
        "best": BEST_CHECKPOINT_PATH,
        "latest": LATEST_CHECKPOINT_PATH,
        "epoch": EPOCH_CHECKPOINT_PATH,
        # File names, status.json events and the progress bar all count epochs from 1.
        "epoch_number": "the epoch counted from 1, three digits: the status.json event with epoch E wrote "
        + jobfiles.EPOCH_CHECKPOINT.replace("{epoch:03d}", "{E:03d}")
        + "; only the newest train.keep_last_checkpoints epoch files (0: all) and the best one's are kept",
        "best_metric": ACTION_INFO["train"]["metric"],
        "evaluate_key": "evaluate.checkpoint",
        "inference_key": "inference.checkpoint",
        "export_key": "export.checkpoint",
        "resume_key": RESUME_KEY,
        "resume_latest_value": "auto",
    }


def skill_info() -> dict[str, Any]:
    return {
        "name": "mal",
        "display_name": "MAL mask auto-labeler",
        "version": __version__,
        "description": "Instance masks for every box of a COCO file, from box supervision (MAL, CVPR 2023).",
        "automl_enabled": any(info["automl_enabled"] for info in ACTION_INFO.values()),
        "automl_policy": automl_policy(),
        "checkpoints": checkpoint_locations(),
        "actions": {
            action: {
                "command": f"mal {action} -e {{config_path}}",
                "description": info["description"],
                "schema": f"schemas/{action}.schema.json",
                "template": f"references/spec_template_{action}.yaml",
                "inputs": info["inputs"],
                "outputs": info["outputs"],
                "automl_enabled": info["automl_enabled"],
                **({"metric": info["metric"], "direction": info["direction"]} if "metric" in info else {}),
                "kpis": list(info["kpis"]),
            }
            for action, info in ACTION_INFO.items()
        },
        "automl_default_parameters": list(AUTOML_DEFAULT_PARAMETERS),
    }


def write_skill_dir(out: str | Path) -> list[Path]:
    """Write the skill layout under `out`; returns the files written."""
    root = Path(out)
    written: list[Path] = []
    for action in ACTIONS:
        path = root / "schemas" / f"{action}.schema.json"
        atomic_write_text(path, json.dumps(action_schema(action), indent=2) + "\n")
        written.append(path)
        template = root / "references" / f"spec_template_{action}.yaml"
        atomic_write_text(template, spec_template(action))
        written.append(template)
    info_path = root / "references" / "skill_info.yaml"
    atomic_write_text(info_path, yaml.safe_dump(skill_info(), sort_keys=False))
    written.append(info_path)
    manifest = {
        "name": "mal",
        "version": __version__,
        "generated_by": "mal schema",
        "actions": {
            action: {"schema": f"schemas/{action}.schema.json",
                     "template": f"references/spec_template_{action}.yaml"}
            for action in ACTIONS
        },
        "skill_info": "references/skill_info.yaml",
        "skill_md": "SKILL.md",
    }
    manifest_path = root / "schemas" / "manifest.json"
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
    written.append(manifest_path)
    skill_path = root / "SKILL.md"
    files = [path.relative_to(root).as_posix() for path in written]
    atomic_write_text(skill_path, skill_markdown(skill_info(), action_schema("train"), files))
    written.append(skill_path)
    return written


def _range_text(leaf: dict[str, Any]) -> str:
    parts = []
    if "enum" in leaf:
        parts.append(" / ".join(str(choice) for choice in leaf["enum"] if choice is not None))
    searched = leaf.get("automl_enabled") and ("valid_min" in leaf or "valid_max" in leaf)
    low = leaf.get("valid_min") if searched else leaf.get("minimum", leaf.get("exclusiveMinimum"))
    high = leaf.get("valid_max") if searched else leaf.get("maximum", leaf.get("exclusiveMaximum"))
    if low is not None or high is not None:
        parts.append(f"[{'' if low is None else low}, {'' if high is None else high}]")
    if leaf.get("automl_enabled"):
        parts.append(f"AutoML searches {leaf.get('minimum')}–{leaf.get('maximum')}")
    return "; ".join(parts)


def spec_reference_markdown() -> str:
    """docs/SPEC.md: every key with type, default, range and description."""
    schema = action_schema("train")
    lines = [
        "# Spec reference",
        "",
        "Generated from `src/mal/spec/schema.py` by `mal schema --docs docs/SPEC.md`; do not edit by hand.",
        "One spec file serves every action; override any key on the command line with `section.key=value`.",
        "",
        "| key | type | default | range | description |",
        "|---|---|---|---|---|",
    ]
    for name, node in schema["properties"].items():
        if node.get("type") == "object":
            lines.append(f"| **{name}** | | | | {node.get('description', '')} |")
            items = [(f"{name}.{leaf}", value) for leaf, value in node["properties"].items()]
        else:
            items = [(name, node)]
        for key, leaf in items:
            kind = leaf["type"] if isinstance(leaf["type"], str) else "/".join(leaf["type"])
            default = json.dumps(leaf["default"])
            description = " ".join(leaf.get("description", "").split()).replace("|", "\\|")
            lines.append(f"| `{key}` | {kind} | `{default}` | {_range_text(leaf)} | {description} |")
    return "\n".join(lines) + "\n"

"""Checkpoint files that are never half-written, and that load with `torch.load(weights_only=True)`."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from mal.errors import CheckpointError
from mal.fileio import atomic_open
from mal.redaction import redact_tree


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temp file and rename, so a SIGKILL mid-save leaves the previous checkpoint intact."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        checkpoint = without_secrets(checkpoint)
        try:
            with atomic_open(path, "wb") as handle:
                torch.save(checkpoint, handle)
        except RuntimeError as exc:
            if isinstance(exc.__context__, KeyboardInterrupt):
                # Ctrl-C or SIGTERM inside torch's writer comes out as "unexpected pos": stop as interrupted.
                raise exc.__context__ from None
            # torch's zip writer reports a failed write (usually a full disk) as "unexpected pos ..."; say so.
            folder = Path(path).parent
            free = shutil.disk_usage(folder).free if folder.exists() else 0
            raise OSError(
                errno.EIO,
                f"writing the checkpoint failed with {free:,} bytes free there (is the disk full?)",
                str(path),
            ) from exc

    def load_checkpoint(self, path: Any, map_location: Any | None = None, weights_only: bool | None = None) -> Any:
        return load_checkpoint_file(path, map_location=map_location or "cpu")


def without_secrets(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint with the secrets of its stored spec hidden (a checkpoint is a file people pass around).

    Only the hyperparameter entries are touched: the state dict's names (`cls_token`, `mask_token`) look like
    secrets to a key-name rule but are weights. Loading needs none of what is hidden (model.* and
    dataset.crop_size)."""
    hidden = dict(checkpoint)
    for key in ("hyper_parameters", "datamodule_hyper_parameters"):
        if isinstance(hidden.get(key), dict):
            hidden[key] = redact_tree(dict(hidden[key]))
    return hidden


def load_checkpoint_file(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint with weights_only=True: a file that needs code to load is refused."""
    checkpoint_path = Path(path)
    if not checkpoint_path.is_file():
        raise CheckpointError(f"checkpoint {checkpoint_path} does not exist; point to a .pth written by mal train.")
    try:
        data = torch.load(checkpoint_path, map_location=map_location, weights_only=True)
    except Exception as exc:
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise CheckpointError(
                f"checkpoint {checkpoint_path} holds Python objects that need code to load, which is refused "
                "for safety; use a checkpoint written by mal train."
            ) from None
        raise CheckpointError(
            f"checkpoint {checkpoint_path} is unreadable or truncated ({type(exc).__name__}); use an intact file."
        ) from None
    if not isinstance(data, dict) or "state_dict" not in data:
        raise CheckpointError(f"checkpoint {checkpoint_path} is not a mal checkpoint (no 'state_dict' in it).")
    return data


def load_trained_model(path: str | os.PathLike[str]) -> tuple[Any, dict[str, Any]]:
    """The `MeanTeacher` (student + teacher) of a `mal train` checkpoint and the spec it was trained with."""
    from mal.engine.module import build_student
    from mal.model.mal import MeanTeacher

    checkpoint = load_checkpoint_file(path)
    config = (checkpoint.get("hyper_parameters") or {}).get("config")
    if not isinstance(config, dict):
        raise CheckpointError(f"checkpoint {path} carries no training spec; use a checkpoint written by mal train.")
    prefix = "mean_teacher."
    state = {key[len(prefix) :]: value for key, value in checkpoint["state_dict"].items() if key.startswith(prefix)}
    arch = (config.get("model") or {}).get("arch")
    try:
        model = MeanTeacher(build_student(config))
        missing, unexpected = model.load_state_dict(state, strict=False)
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        # strict=False still raises on tensors of the wrong shape, e.g. weights of another model.arch.
        raise CheckpointError(
            f"checkpoint {path} does not match its own spec (model.arch={arch}): {_first_line(exc)}; "
            "use a checkpoint written by mal train with this mal version."
        ) from None
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not match its own spec (model.arch={arch}): "
            f"{len(missing)} missing and {len(unexpected)} unexpected tensors; was it written by another mal version?"
        )
    model.eval()
    return model, config


def _first_line(exc: BaseException) -> str:
    """The line of an exception that names the problem (torch's load_state_dict error opens with a generic one)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    useful = lines[1] if len(lines) > 1 and lines[0].startswith("Error(s) in loading") else lines[0]
    return useful[:200]

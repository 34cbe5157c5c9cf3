"""Read pretrained backbone weights from disk (the file side of `mal.model.pretrained`).

Only data is read: `.pth/.pt/.ckpt` through `torch.load(weights_only=True)`, which refuses pickles that need
code, and `.safetensors` through safetensors. Every failure a user can cause becomes a `CheckpointError`.
"""

from __future__ import annotations

import pickle
from os import PathLike
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file as load_safetensors

from mal.errors import CheckpointError
from mal.model.backbone import ViTBackbone
from mal.model.pretrained import LoadReport, map_backbone_state_dict, unwrap_state_dict

TORCH_SUFFIXES = (".pth", ".pt", ".ckpt")
SAFETENSORS_SUFFIX = ".safetensors"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_weights(path: str | PathLike[str]) -> object:
    """Load a weight file's contents (data only) or raise CheckpointError naming the file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (*TORCH_SUFFIXES, SAFETENSORS_SUFFIX):
        raise CheckpointError(
            f"Pretrained weights file {path} has an unsupported extension {suffix or '(none)'}; "
            f"use one of {', '.join((*TORCH_SUFFIXES, SAFETENSORS_SUFFIX))}."
        )
    if not path.is_file():
        raise CheckpointError(f"Pretrained weights file {path} does not exist; check the path in the spec.")
    if suffix == SAFETENSORS_SUFFIX:
        try:
            return load_safetensors(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(
                f"Pretrained weights file {path} is not a readable safetensors file ({_first_line(exc)}); "
                "re-download or re-export it."
            ) from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"Pretrained weights file {path} holds Python objects that need code to load, which is refused for "
            "safety; save just the state dict (torch.save(model.state_dict(), path)) or convert it to "
            ".safetensors."
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"Pretrained weights file {path} is unreadable or truncated ({type(exc).__name__}); re-download or "
            "re-save it."
        ) from exc


def load_pretrained_backbone(backbone: ViTBackbone, path: str | PathLike[str]) -> LoadReport:
    """Load ViT weights from `path` into `backbone` in place and return what was loaded, missing or dropped."""
    contents = read_weights(path)
    if unwrap_state_dict(contents) is None:
        raise CheckpointError(
            f"Pretrained weights file {path} does not contain a state dict of tensors; save "
            "model.state_dict() (optionally under a 'model' or 'state_dict' key)."
        )
    mapped, report = map_backbone_state_dict(contents, backbone)
    if not report.loaded:
        raise CheckpointError(
            f"Pretrained weights file {path} has no tensor matching the {backbone.arch.name} backbone "
            f"(embedding width {backbone.out_channels}); it was saved from another architecture, so choose the "
            "matching model.arch or another file."
        )
    backbone.load_state_dict(mapped, strict=False)
    return report

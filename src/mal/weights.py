"""Read and check pretrained backbone weights (the file side of `mal.model.pretrained`).

`train.pretrained_model_path` names a file or a timm model name. A name is looked up in the local Hugging Face cache
(where timm keeps what it downloads) and never downloaded: training machines are often offline, and a silent
multi-GB download in the middle of `mal train` is worse than one line saying where to put the file.

Only data is read: `.pth/.pt/.ckpt` through `torch.load(weights_only=True)`, which refuses pickles that need
code, and `.safetensors` through safetensors. Every failure a user can cause becomes a `CheckpointError` naming the
file and what to do; `check_pretrained` runs the same reading and shape comparison before training (`mal train
--print-spec`, `mal dataset check`) that `load_pretrained_backbone` runs when it loads.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from os import PathLike
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file as load_safetensors

from mal.errors import CheckpointError
from mal.model.backbone import ARCHS, ViTBackbone, build_backbone
from mal.model.pretrained import LoadReport, map_backbone_state_dict, unwrap_state_dict
from mal.spec.schema import PRETRAINED_SUFFIXES, is_timm_name

SAFETENSORS_SUFFIX = ".safetensors"
# One list for the spec's check and this reader: a suffix the spec accepts is one this module reads.
TORCH_SUFFIXES = tuple(suffix for suffix in PRETRAINED_SUFFIXES if suffix != SAFETENSORS_SUFFIX)

HF_WEIGHTS_FILE = "model.safetensors"
"""The file timm downloads for a model on the Hugging Face hub (it prefers safetensors)."""
WEIGHTS_DOC = "docs/WEIGHTS.md"

# A timm model name, optionally with its pretrained tag and the hub organisation: vit_small_patch16_224.augreg_in21k
# timm's ViT families and the model.arch of the same shape (width, depth, heads; the patch kernel is resampled).
TIMM_FAMILIES = {
    "vit_tiny_patch16_": "vit-tiny/16",
    "vit_small_patch16_": "vit-small/16",
    "vit_base_patch16_": "vit-mae-base/16",
    "vit_large_patch16_": "vit-mae-large/16",
    "vit_huge_patch14_": "vit-mae-huge/14",
}
_BLOCK_KEY = re.compile(r"(?:^|\.)blocks\.(\d+)\.")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache folder, read from the environment as huggingface_hub does (at call time)."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return Path(os.environ[name]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(home).expanduser() / "hub"


def find_in_hf_cache(repo_id: str, filename: str, cache: Path) -> Path | None:
    """`filename` of the hub repo `repo_id` in the cache `cache`, or None.

    The layout is huggingface_hub's: models--ORG--NAME/refs/main holds the commit of the main branch and
    snapshots/COMMIT/FILE the file (a link into blobs/). The main branch's snapshot is used first, then any other
    snapshot holding the file (a cache copied without its refs/), newest first.
    """
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshots = repo / "snapshots"
    candidates = []
    ref = repo / "refs" / "main"
    if ref.is_file():
        candidates.append(snapshots / ref.read_text(encoding="utf-8").strip() / filename)
    if snapshots.is_dir():
        others = [path / filename for path in snapshots.iterdir()]
        candidates += sorted(others, key=lambda path: path.stat().st_mtime if path.exists() else 0, reverse=True)
    return next((path for path in candidates if path.is_file()), None)


def timm_arch(name: str) -> str | None:
    """The model.arch a timm ViT name fits (vit_small_patch16_224.augreg_in21k -> vit-small/16), or None."""
    bare = name.removeprefix("timm/")
    return next((arch for prefix, arch in TIMM_FAMILIES.items() if bare.startswith(prefix)), None)


def _timm_repo(value: str) -> str:
    """The Hugging Face repo of a timm model name, from timm's own registry (no network)."""
    from timm.models import get_pretrained_cfg

    name = value.removeprefix("timm/")
    try:
        cfg = get_pretrained_cfg(name)
    except RuntimeError as exc:  # timm knows the model but not the tag
        raise CheckpointError(
            f"train.pretrained_model_path = {value}: {_first_line(exc).rstrip('.')}; pick a tag `timm.list_pretrained"
            f"('{name.split('.')[0]}*')` lists, or give the path of a weights file."
        ) from None
    if cfg is None:
        raise CheckpointError(
            f"train.pretrained_model_path = {value} is neither an existing file nor a timm model name; give the path "
            f"of a {'/'.join(PRETRAINED_SUFFIXES)} weights file, a timm ViT name such as "
            f"vit_small_patch16_224.augreg_in21k, or remove the key to train from random weights ({WEIGHTS_DOC})."
        )
    if not cfg.hf_hub_id:
        raise CheckpointError(
            f"train.pretrained_model_path = {value}: timm has no Hugging Face weights for this model; download its "
            f"weights file and give its path ({WEIGHTS_DOC})."
        )
    return cfg.hf_hub_id.split("@", 1)[0]


def resolve_pretrained(value: str | PathLike[str]) -> Path:
    """The weights file `value` names: an existing file as it is, a timm model name through the local Hugging Face
    cache (CheckpointError when absent, saying where to put it), anything else as a path for `read_weights` to
    judge (a missing file, an unsupported extension)."""
    path = Path(value)
    text = str(value)
    if path.is_file() or not is_timm_name(text):
        return path
    repo_id = _timm_repo(text)
    cache = hf_hub_cache()
    found = find_in_hf_cache(repo_id, HF_WEIGHTS_FILE, cache)
    if found is None:
        name = text.removeprefix("timm/")
        raise CheckpointError(
            f"train.pretrained_model_path = {text}: its weights are not in the local Hugging Face cache {cache} "
            f"(searched models--{repo_id.replace('/', '--')}/snapshots/*/{HF_WEIGHTS_FILE}; nothing is downloaded); "
            f"on a machine with internet run python -c \"import timm; timm.create_model('{name}', pretrained=True)\" "
            f"and copy the folder models--{repo_id.replace('/', '--')} of its cache (~/.cache/huggingface/hub) into "
            f"{cache} (or point HF_HOME at a cache that has it), or give the path of the weights file."
        )
    return found


def read_weights(path: str | PathLike[str]) -> object:
    """Load a weight file's contents (data only) or raise CheckpointError naming the file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (*TORCH_SUFFIXES, SAFETENSORS_SUFFIX):
        raise CheckpointError(
            f"Pretrained weights file {path} has an unsupported extension {suffix or '(none)'}; "
            f"use one of {', '.join((*TORCH_SUFFIXES, SAFETENSORS_SUFFIX))}, or a timm model name."
        )
    if not path.is_file():
        raise CheckpointError(
            f"Pretrained weights file {path} does not exist; fix train.pretrained_model_path, or remove it to train "
            f"from random weights ({WEIGHTS_DOC} says where MAE and timm weights come from)."
        )
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


def _vit_shape(weights: Mapping[str, object]) -> tuple[int | None, int | None]:
    """(embedding width, number of blocks) of the ViT a state dict holds, whatever prefixes its keys carry."""
    width = None
    for key, value in weights.items():
        if isinstance(value, torch.Tensor) and value.ndim >= 1:
            if key.endswith("cls_token") or (key.endswith("pos_embed") and not key.endswith("decoder_pos_embed")):
                width = int(value.shape[-1])
                break
            if key.endswith("patch_embed.proj.weight"):
                width = int(value.shape[0])
                break
    indices = {int(match.group(1)) for key in weights if (match := _BLOCK_KEY.search(key))}
    return width, (max(indices) + 1 if indices else None)


def _what_it_holds(width: int | None, depth: int | None) -> str:
    if width is None or depth is None:
        return "it holds no ViT this reader recognises"
    fits = [arch.name for arch in ARCHS.values() if (arch.embed_dim, arch.depth) == (width, depth)]
    which = f"which is model.arch = {fits[0]}" if fits else "which matches no model.arch of mal"
    return f"it holds a ViT with embedding width {width} and {depth} blocks, {which}"


def _fit_problem(label: str, weights: Mapping[str, object], report: LoadReport, backbone: ViTBackbone) -> str | None:
    """Why the weights do not fit the backbone (one sentence), or None when every block and width matches."""
    arch = backbone.arch
    width, depth = _vit_shape(weights)
    fits = [a.name for a in ARCHS.values() if (a.embed_dim, a.depth) == (width, depth)]
    remedy = (f"set model.arch={fits[0]}, or use weights made for {arch.name} ({WEIGHTS_DOC})" if fits
              else f"use weights made for {arch.name} ({WEIGHTS_DOC})")
    holds = _what_it_holds(width, depth)
    if not report.loaded:
        # The wording "the <arch> backbone (embedding width N)" is what users (and tests) search for.
        return (f"Pretrained weights file {label} has no tensor matching the {arch.name} backbone (embedding width "
                f"{backbone.out_channels}); {holds}: {remedy}.")
    if report.mismatched or depth != arch.depth:  # depth None: no transformer block in the file at all
        first = f" (first: {report.mismatched[0]})" if report.mismatched else ""
        return (f"Pretrained weights file {label} does not fit model.arch = {arch.name} (embedding width "
                f"{arch.embed_dim}, {arch.depth} blocks){first}; {holds}: {remedy}.")
    return None


def _map_checked(
    backbone: ViTBackbone, value: str | PathLike[str]
) -> tuple[Path, dict[str, torch.Tensor], LoadReport]:
    """Resolve, read and map `value` onto `backbone`: (the file, the mapped state dict, the report)."""
    path = resolve_pretrained(value)
    label = str(value) if Path(value) == path else f"{value} ({path})"
    contents = read_weights(path)
    weights = unwrap_state_dict(contents)
    if weights is None:
        raise CheckpointError(
            f"Pretrained weights file {label} does not contain a state dict of tensors; save "
            "model.state_dict() (optionally under a 'model' or 'state_dict' key)."
        )
    mapped, report = map_backbone_state_dict(contents, backbone)
    problem = _fit_problem(label, weights, report, backbone)
    if problem:
        raise CheckpointError(problem)
    return path, mapped, report


def check_pretrained(value: str | PathLike[str], arch: str, crop_size: int) -> Path:
    """Raise CheckpointError unless `value` (a file or a cached timm name) holds weights that fit `arch` at
    `crop_size`; return the file. The shapes are compared on a backbone built on the meta device: no memory for
    its weights, no time to initialise them."""
    if arch not in ARCHS:
        raise CheckpointError(f"model.arch = {arch} is not a known backbone; use one of {', '.join(ARCHS)}.")
    text = str(value)
    wanted = timm_arch(text) if is_timm_name(text) and not Path(text).is_file() else None
    if wanted is not None and wanted != arch:
        # Said before the cache is searched: the fix (another arch or another name) does not depend on the file.
        raise CheckpointError(
            f"train.pretrained_model_path = {text} is a timm model for model.arch = {wanted}, not {arch}; set "
            f"model.arch={wanted}, or name a timm model of the {arch} shape ({WEIGHTS_DOC})."
        )
    with torch.device("meta"):
        backbone = build_backbone(arch, crop_size)
    path, _, _ = _map_checked(backbone, value)
    return path


def load_pretrained_backbone(backbone: ViTBackbone, path: str | PathLike[str]) -> LoadReport:
    """Load ViT weights from `path` (a file or a cached timm name) into `backbone` in place and return what was
    loaded, missing or dropped; CheckpointError when the file is unusable or does not fit the backbone."""
    _, mapped, report = _map_checked(backbone, path)
    backbone.load_state_dict(mapped, strict=False)
    return report

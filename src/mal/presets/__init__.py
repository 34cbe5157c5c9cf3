"""Spec presets shipped inside the package: `mal presets` lists them, `-e NAME` reads one (`mal train -e cpu-natural
-e my_data.yaml`), and `mal demo` runs on `demo`.

A preset is a YAML file here whose first comment line is its one-line description and whose `# Fits:` line says
what data it suits; both are what `mal presets` prints, so the file is the only place to change them. Names are
shown with hyphens (`cpu-natural`, the file is cpu_natural.yaml); either spelling is accepted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

FITS_PREFIX = "# Fits:"

# model.arch values and a crop size from which TAO's GPU settings begin: on a CPU without pretrained weights these
# take hours per epoch and, after a short run, give masks close to their boxes (issue 20), so `mal train` points
# at a CPU preset instead. The presets crop at 64-96 px with vit-tiny/16.
GPU_ARCHS = ("vit-mae-base/16", "vit-mae-large/16", "vit-mae-huge/14")
GPU_CROP_SIZE = 224


@dataclass(frozen=True)
class Preset:
    """One shipped preset: its name as typed after -e, its file, and the two lines `mal presets` prints."""

    name: str
    path: Path
    description: str
    fits: str


def _folder() -> Path:
    return Path(str(resources.files(__package__)))


def _display_name(stem: str) -> str:
    return stem.replace("_", "-")


def _read_header(path: Path) -> tuple[str, str]:
    """(first comment line, the `# Fits:` line) of a preset file, without their '#' markers."""
    description, fits = "", ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        if line.startswith(FITS_PREFIX):
            fits = line[len(FITS_PREFIX) :].strip()
        elif not description:
            description = line.lstrip("#").strip()
    return description, fits


def list_presets() -> list[Preset]:
    """Every shipped preset, sorted by name."""
    presets = []
    for path in sorted(_folder().glob("*.yaml")):
        description, fits = _read_header(path)
        presets.append(Preset(_display_name(path.stem), path, description, fits))
    return presets


def preset_names() -> list[str]:
    return [preset.name for preset in list_presets()]


def find_preset(name: str) -> Path | None:
    """The file of the preset `name` (cpu-natural, cpu_natural, or either with .yaml), or None."""
    wanted = _display_name(name.strip().removesuffix(".yaml").removesuffix(".yml")).lower()
    return next((preset.path for preset in list_presets() if preset.name == wanted), None)


def preset_path(name: str) -> Path:
    """Path of a shipped preset YAML, e.g. `preset_path("demo")`; KeyError when there is none of that name."""
    path = find_preset(name)
    if path is None:
        raise KeyError(f"no shipped preset {name!r}; the presets are {', '.join(preset_names())}")
    return path


def presets_table() -> str:
    """What `mal presets` prints: each preset's name, description and the data it fits, then how to use one."""
    presets = list_presets()
    width = max(len(preset.name) for preset in presets) + 2
    lines = []
    for preset in presets:
        lines.append(f"{preset.name:<{width}}{preset.description}")
        if preset.fits:
            lines.append(f"{'':<{width}}fits: {preset.fits}")
    lines += [
        "",
        "Use one with your data file on top: mal train -e cpu-natural -e my_data.yaml (later files win, then "
        "key=value overrides); `mal presets NAME` prints a preset's file.",
    ]
    return "\n".join(lines) + "\n"


def cpu_preset_hint(arch: str, crop_size: int, *, has_gpu: bool, has_weights: bool,
                    spec_args: Sequence[str] = ()) -> str | None:
    """One line pointing at a CPU preset when training would run TAO's GPU settings on a CPU from random weights;
    None when the settings already fit the machine (a GPU, pretrained weights, or a small arch and crop)."""
    if has_gpu or has_weights or (arch not in GPU_ARCHS and crop_size < GPU_CROP_SIZE):
        return None
    if any(find_preset(text) is not None for text in spec_args):
        return None  # the user already starts from a preset and raised the settings on purpose
    # The preset goes last: its settings then win over the arch and crop size a TAO file names, and it sets no
    # data path, so the file's data paths stay.
    yours = " ".join(f"-e {text}" for text in spec_args) or "-e my_data.yaml"
    return (
        f"note: no GPU here and no train.pretrained_model_path, and model.arch = {arch} at dataset.crop_size = "
        f"{crop_size} are GPU settings (slow on a CPU, and from random weights a short run gives masks close to "
        f"their boxes); a CPU preset fits this machine: mal train {yours} -e cpu-natural for photos, or -e "
        "cpu-nuclei for microscopy (`mal presets` lists them)."
    )

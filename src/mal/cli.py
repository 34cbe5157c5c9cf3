"""The `mal` command: `mal <action> -e spec.yaml [section.key=value ...]`, TAO's command shape.

Exit codes (the job contract): 0 success, 2 the user's input is wrong, 1 anything else. The last line on stderr
names the cause in one sentence. Heavy imports (torch, lightning) happen inside the actions, so `mal --help`
and spec errors answer at once.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mal import __version__
from mal.errors import UserError
from mal.fileio import STORAGE_ERRNOS
from mal.redaction import redact_text

if TYPE_CHECKING:
    from mal.spec.schema import ExperimentSpec

# action -> (module:function running it with the loaded spec, one-line help)
SPEC_ACTIONS: dict[str, tuple[str, str]] = {
    "train": ("mal.engine.train:run", "train the box-supervised ViT on the boxes of a COCO file"),
    "evaluate": ("mal.engine.evaluate:run", "score masks against ground truth (mIoU, mask AP)"),
    "inference": ("mal.engine.inference:run", "write the COCO file with an RLE mask on every box"),
    "export": ("mal.engine.export:run", "export the inference network to ONNX"),
    "pretrain": ("mal.engine.pretrain:run", "self-supervised pretraining of the ViT on your own images (MAE or DINO)"),
}




def _add_spec_arguments(parser: argparse.ArgumentParser, spec_required: bool = True) -> None:
    parser.add_argument("-e", "--experiment_spec", "--experiment-spec", dest="spec", required=spec_required,
                        action="append", metavar="SPEC",
                        help="spec YAML file (TAO layout; see `mal schema`) or a shipped preset's name (see `mal "
                        "presets`); repeat it to merge several, later files win: -e cpu-natural -e my_data.yaml")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="override spec keys, e.g. train.lr=1e-5 model.arch=vit-tiny/16")
    parser.add_argument("--print-spec", action="store_true", help="print the resolved spec and exit")


def _add_debug(parser: argparse.ArgumentParser, top_level: bool = False) -> None:
    # Sub-commands suppress their default so `mal --debug train` is not reset by the sub-parser.
    parser.add_argument("--debug", action="store_true", default=False if top_level else argparse.SUPPRESS,
                        help="show the full traceback on errors")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mal",
        description="MAL: instance masks for every box of a COCO file, learned from the boxes alone.",
        epilog="Run `mal <action> --help` for the options of an action.",
    )
    parser.add_argument("--version", action="version", version=f"mal {__version__}")
    _add_debug(parser, top_level=True)
    actions = parser.add_subparsers(dest="action", metavar="action", required=True,
                                    help="what to do (`mal ACTION --help` for its options)")

    for name, (_, help_text) in SPEC_ACTIONS.items():
        sub = actions.add_parser(name, help=help_text, description=help_text)
        _add_spec_arguments(sub)
        _add_debug(sub)

    schema = actions.add_parser("schema", help="write JSON schemas, spec templates and skill_info (TAO layout)",
                                description="Write the TAO skill layout generated from the spec models.")
    schema.add_argument("--out", required=False, type=Path, help="skill folder to write")
    schema.add_argument("--docs", type=Path, help="also write the spec reference markdown to this file")
    _add_debug(schema)

    presets = actions.add_parser("presets", help="list the shipped spec presets, or print one",
                                 description="List the spec presets shipped with mal (name, description, the data "
                                 "they fit), or print one preset's YAML.")
    presets.add_argument("name", nargs="?", default=None, help="a preset to print, e.g. cpu-natural")
    _add_debug(presets)

    dataset = actions.add_parser("dataset", help="dataset tools (check)")
    dataset_actions = dataset.add_subparsers(dest="dataset_action", metavar="command", required=True,
                                             help="the dataset tool to run")
    check = dataset_actions.add_parser("check", help="validate the COCO files and images of a spec",
                                       description="Validate the spec's COCO files and images; exit 2 on errors.")
    _add_spec_arguments(check)
    _add_debug(check)

    gallery = actions.add_parser("gallery", help="write the review page for a label file")
    gallery.add_argument("labels", type=Path, help="COCO JSON with masks (the output of mal inference)")
    gallery.add_argument("images", help="folder of the images")
    gallery.add_argument("--out", type=Path, default=None, help="output folder (default: gallery/ beside the labels)")
    gallery.add_argument("--gt", type=Path, default=None, help="COCO JSON with ground-truth masks, to show IoUs")
    _add_debug(gallery)

    labels = actions.add_parser("labels", help="label-file tools (export)")
    labels_actions = labels.add_subparsers(dest="labels_action", metavar="command", required=True,
                                           help="the label tool to run")
    label_export = labels_actions.add_parser("export", help="write a label file for FiftyOne, CVAT or Label Studio",
                                             description="Write the masks of a label file in the layout FiftyOne, "
                                             "CVAT or Label Studio imports (see docs/EXPORT.md).")
    label_export.add_argument("labels", type=Path, help="COCO JSON with masks (the output of mal inference)")
    label_export.add_argument("--format", required=True, choices=("fiftyone", "cvat", "labelstudio"),
                              help="the tool to hand the labels to")
    label_export.add_argument("--out", required=True, type=Path, help="folder to write (must be new or empty)")
    label_export.add_argument("--images", type=Path, default=None,
                              help="folder of the images, to put them in the output (hard links, else copies)")
    label_export.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    _add_debug(label_export)

    demo = actions.add_parser("demo", help="the whole job on an embedded default: train, label, evaluate",
                              description="Generate a synthetic dataset (or use yours), train vit-tiny/16 on the "
                              "CPU, label every box, evaluate, and write the review page.")
    demo.add_argument("--results-dir", type=Path, default=Path("results/demo"), help="where to write")
    demo.add_argument("--ann", default=None, help="your COCO JSON instead of the synthetic data")
    demo.add_argument("--images", default=None, help="your image folder (with --ann)")
    demo.add_argument("--epochs", type=int, default=None, help="training epochs (default: preset)")
    demo.add_argument("overrides", nargs="*", metavar="section.key=value", help="override spec keys")
    _add_debug(demo)

    automl = actions.add_parser("automl", add_help=False,
                                help="hyperparameter search over `mal train` (run/status/resume/report/worker)")
    automl.add_argument("automl_args", nargs=argparse.REMAINDER, help="see `mal automl --help`")
    _add_debug(automl)
    return parser


def _resolve(target: str) -> Callable[..., int | None]:
    module_name, function_name = target.split(":")
    return getattr(importlib.import_module(module_name), function_name)


def _check_weights(spec: ExperimentSpec) -> None:
    """Train's pretrained weights exist (or a timm name is in the local cache) and fit model.arch: said at once,
    not after the data is read and the network built."""
    if spec.train.pretrained_model_path:
        from mal.weights import check_pretrained

        check_pretrained(spec.train.pretrained_model_path, spec.model.arch, spec.dataset.crop_size)


def _is_first_process() -> bool:
    # Lightning's DDP re-runs this command in each extra process with LOCAL_RANK (and NODE_RANK) set; torchrun
    # sets RANK, srun SLURM_PROCID: a note for the whole run is printed by its first process only.
    ranks = ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID")
    return all(os.environ.get(name, "0") == "0" for name in ranks)


def _print_cpu_preset_hint(args: argparse.Namespace, spec: ExperimentSpec) -> None:
    import torch

    from mal.presets import cpu_preset_hint

    hint = cpu_preset_hint(spec.model.arch, spec.dataset.crop_size, has_gpu=torch.cuda.is_available(),
                           has_weights=bool(spec.train.pretrained_model_path), spec_args=args.spec or ())
    if hint and _is_first_process():
        print(f"mal {args.action}: {hint}", file=sys.stderr, flush=True)


def _run_spec_action(args: argparse.Namespace) -> int:
    from mal.spec import dump_spec_yaml, load_spec

    spec = load_spec(args.spec, args.overrides)
    if args.action == "train":
        _check_weights(spec)
    if args.print_spec:
        sys.stdout.write(dump_spec_yaml(spec))
        return 0
    if args.action == "train":
        _print_cpu_preset_hint(args, spec)
    runner = _resolve(SPEC_ACTIONS[args.action][0])
    return int(runner(spec) or 0)


def _run_schema(args: argparse.Namespace) -> int:
    from mal.fileio import atomic_write_text
    from mal.spec.export import spec_reference_markdown, write_skill_dir

    if args.out is None and args.docs is None:
        raise UserError("mal schema needs --out DIR (the skill folder) and/or --docs FILE.")
    if args.out is not None:
        for path in write_skill_dir(args.out):
            print(path)
    if args.docs is not None:
        atomic_write_text(args.docs, spec_reference_markdown())
        print(args.docs)
    return 0


def _run_dataset(args: argparse.Namespace) -> int:
    from mal.spec import dump_spec_yaml, load_spec

    spec = load_spec(args.spec, args.overrides)
    if args.print_spec:
        _check_weights(spec)  # the run below checks them too (mal.engine.dataset_check)
        sys.stdout.write(dump_spec_yaml(spec))
        return 0
    return int(_resolve("mal.engine.dataset_check:run")(spec) or 0)


def _run_presets(args: argparse.Namespace) -> int:
    from mal.presets import find_preset, preset_names, presets_table

    if args.name is None:
        sys.stdout.write(presets_table())
        return 0
    path = find_preset(args.name)
    if path is None:
        raise UserError(f"there is no shipped preset {args.name}; the presets are {', '.join(preset_names())} "
                        "(`mal presets` describes them).")
    sys.stdout.write(path.read_text(encoding="utf-8"))
    return 0


def _run_gallery(args: argparse.Namespace) -> int:
    out = args.out if args.out is not None else args.labels.parent / "gallery"
    page = _resolve("mal.gallery.command:gallery_main")(args.labels, args.images, out, gt_path=args.gt)
    print(page)
    return 0


def _run_labels(args: argparse.Namespace) -> int:
    export = _resolve("mal.labels.export:export_main")
    return int(export(args.labels, args.format, args.out, args.images, args.overwrite) or 0)


def _run_demo(args: argparse.Namespace) -> int:
    return int(_resolve("mal.engine.demo:run_demo")(args) or 0)


def _run_automl(args: argparse.Namespace) -> int:
    return int(_resolve("mal.automl.cli:main")(args.automl_args) or 0)


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "schema": _run_schema,
    "presets": _run_presets,
    "dataset": _run_dataset,
    "gallery": _run_gallery,
    "labels": _run_labels,
    "demo": _run_demo,
    "automl": _run_automl,
}


def _stopped_line(args: argparse.Namespace, exc: KeyboardInterrupt) -> tuple[str, int]:
    """What Ctrl-C (exit 130) or SIGTERM (143) prints: for `mal train`, the command that resumes the run."""
    signum = int(getattr(exc, "signum", signal.SIGINT))
    how = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
    if args.action != "train" or not getattr(args, "spec", None):
        return f"{how}.", 128 + signum
    kept = [text for text in args.overrides if not text.startswith("train.resume_training_checkpoint_path=")]
    specs = [part for spec in args.spec for part in ("-e", spec)]
    command = shlex.join(["mal", "train", *specs, *kept, "train.resume_training_checkpoint_path=auto"])
    return f"{how}; continue from the last checkpoint with: {command}", 128 + signum


def _quiet_storage_errors_in_threads(debug: bool) -> None:
    """A background writer (TensorBoard's) that hits a full disk must not print a thread traceback: its owner
    re-raises the same error in the main thread, which names the file in one line."""

    def hook(hook_args: threading.ExceptHookArgs) -> None:
        if not debug and isinstance(hook_args.exc_value, OSError) and hook_args.exc_value.errno in STORAGE_ERRNOS:
            return
        threading.__excepthook__(hook_args)

    threading.excepthook = hook


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv[:1] == ["automl"]:
        # `mal automl` has its own parser (mal.automl.cli); argparse's REMAINDER would swallow its --help.
        args = argparse.Namespace(action="automl", automl_args=argv[1:], debug="--debug" in argv)
    else:
        args = parser.parse_args(argv)
    handler = HANDLERS.get(args.action, _run_spec_action)
    _quiet_storage_errors_in_threads(bool(args.debug))
    try:
        return handler(args)
    except UserError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"mal {args.action}: error: {redact_text(exc)}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        if args.debug:
            traceback.print_exc()
        if exc.errno not in STORAGE_ERRNOS or not exc.filename:
            print(f"mal {args.action}: internal error: {type(exc).__name__}: {redact_text(exc)} "
                  f"(rerun with --debug for the traceback)", file=sys.stderr)
            return 1
        # Not the user's input (exit 1), but plainly said: which file could not be written, and why.
        print(f"mal {args.action}: error: cannot write {exc.filename}: {exc.strerror}; free some space or set "
              "results_dir / the output path to another disk.", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        line, code = _stopped_line(args, exc)
        print(f"mal {args.action}: {redact_text(line)}", file=sys.stderr)  # overrides may hold a data URL's password
        return code
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        reason = redact_text(str(exc).splitlines()[0]) if str(exc) else ""  # may quote a URL with its password
        print(f"mal {args.action}: internal error: {type(exc).__name__}: {reason} "
              f"(rerun with --debug for the traceback)", file=sys.stderr)
        return 1


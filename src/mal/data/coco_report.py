"""The outcome of validating a COCO file: every problem found (where, what, how to fix) and counts of what it holds.

`ValidationReport.summary` is the one sentence a `DataError` carries; `render` gives the tables `mal dataset check`
prints.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset: where it is, what is wrong, and how to fix it."""

    severity: Severity
    code: str
    message: str
    fix: str
    file: str
    image_id: Any = None
    ann_id: Any = None

    @property
    def where(self) -> str:
        parts = []
        if self.ann_id is not None:
            parts.append(f"annotation {self.ann_id}")
        if self.image_id is not None:
            parts.append(f"image {self.image_id}")
        return ", ".join(parts)

    def __str__(self) -> str:
        where = f" ({self.where})" if self.where else ""
        return f"{self.file}{where}: {self.message}; {self.fix}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
            "fix": self.fix,
            "file": self.file,
            "image_id": self.image_id,
            "ann_id": self.ann_id,
        }


@dataclass
class ValidationReport:
    """Every problem found in one pass, plus counts of what the dataset holds."""

    file: str
    problems: list[Problem] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    min_obj_size: float = 0.0
    max_obj_size: float = math.inf

    def add(self, severity: Severity, code: str, message: str, fix: str, *, image_id=None, ann_id=None) -> None:
        self.problems.append(Problem(severity, code, message, fix, self.file, image_id, ann_id))

    def error(self, code: str, message: str, fix: str, **where: Any) -> None:
        self.add("error", code, message, fix, **where)

    def warning(self, code: str, message: str, fix: str, **where: Any) -> None:
        self.add("warning", code, message, fix, **where)

    @property
    def errors(self) -> list[Problem]:
        return [problem for problem in self.problems if problem.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [problem for problem in self.problems if problem.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def codes(self) -> Counter[str]:
        return Counter(problem.code for problem in self.problems)

    def summary(self) -> str:
        """One sentence: the first error and how many there are in all."""
        errors = self.errors
        if not errors:
            return f"{self.file} is valid ({len(self.warnings)} warnings)."
        first = errors[0]
        where = f" ({first.where})" if first.where else ""
        more = f" and {len(errors) - 1} more errors" if len(errors) > 1 else ""
        return f"{self.file}{where}: {first.message}; {first.fix}{more} (run `mal dataset check` for the full list)."

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "ok": self.ok,
            "counts": dict(self.counts),
            "min_obj_size": self.min_obj_size,
            "max_obj_size": self.max_obj_size if math.isfinite(self.max_obj_size) else None,
            "problems": [problem.to_dict() for problem in self.problems],
        }

    def renderables(self, examples_per_code: int = 3) -> list[Any]:
        """Rich tables: counts, then problems grouped by kind with a few examples each."""
        from rich.table import Table

        counts = Table(title=f"Dataset {self.file}", show_header=False, title_justify="left")
        counts.add_column("what", style="bold")
        counts.add_column("value", justify="right")
        labels = {
            "images": "images",
            "images_without_boxes": "images without boxes",
            "boxes": "boxes",
            "classes": "classes",
            "small": f"small boxes (< {32}²)",
            "medium": f"medium boxes (< {96}²)",
            "large": "large boxes",
            "crowd": "crowd boxes",
            "clipped": "boxes clipped to the image",
            "with_masks": "boxes with a ground-truth mask",
            "filtered_small": f"boxes with area ≤ min_obj_size ({self.min_obj_size:g})",
            "filtered_large": f"boxes with area > max_obj_size ({self.max_obj_size:g})",
            "trainable": "boxes used for training",
        }
        for key, label in labels.items():
            if key in self.counts:
                counts.add_row(label, f"{self.counts[key]:,}")
        out: list[Any] = [counts]
        if self.problems:
            table = Table(title="Problems", title_justify="left")
            for column in ("severity", "kind", "count", "examples (first few)", "fix"):
                table.add_column(column, overflow="fold")
            grouped: dict[tuple[str, str], list[Problem]] = {}
            for problem in self.problems:
                grouped.setdefault((problem.severity, problem.code), []).append(problem)
            for (severity, code), items in grouped.items():
                examples = "\n".join(
                    f"{p.where + ': ' if p.where else ''}{p.message}" for p in items[:examples_per_code]
                )
                style = "red" if severity == "error" else "yellow"
                table.add_row(f"[{style}]{severity}[/]", code, str(len(items)), examples, items[0].fix)
            out.append(table)
        verdict = "[green]OK[/]" if self.ok else f"[red]{len(self.errors)} errors[/]"
        out.append(f"{verdict}, {len(self.warnings)} warnings")
        return out

    def render(self, width: int = 110) -> str:
        """The summary as plain text (what `mal dataset check` prints, without colour)."""
        from rich.console import Console

        console = Console(width=width, record=True, file=open(os.devnull, "w"), color_system=None)  # noqa: SIM115
        with console.file:
            for item in self.renderables():
                console.print(item)
        return console.export_text()

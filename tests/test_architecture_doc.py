"""docs/ARCHITECTURE.md stays true: every module under src/mal is listed in its package's row, and every `mal.x.y`
the docs cite exists."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "mal"
DOC = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")


def _modules_table() -> dict[str, str]:
    """package label -> the text of its row(s) in the Modules table."""
    section = DOC.split("## Modules", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and (cells[0].startswith("`mal") or cells[0].startswith("shared by")):
            package = re.match(r"`(mal[\w.]*)`", cells[0])
            key = package.group(1) if package else "mal"
            rows[key] = rows.get(key, "") + " " + " ".join(cells[1:])
    return rows


def _source_modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if p.name != "__init__.py" and "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", _source_modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_every_module_is_listed_in_its_packages_row(path: Path) -> None:
    package = ".".join(("mal", *path.relative_to(SRC).parent.parts))
    rows = _modules_table()
    assert package in rows, f"docs/ARCHITECTURE.md has no row for package {package}"
    assert f"`{path.name}`" in rows[package], f"docs/ARCHITECTURE.md's {package} row does not list `{path.name}`"


def _cited_names() -> list[str]:
    text = "\n".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs").glob("*.md")))
    names = set(re.findall(r"`(mal(?:\.\w+)+)`", text))
    return sorted(name for name in names if not name.endswith((".py", ".yaml", ".json", ".md")))


@pytest.mark.parametrize("name", _cited_names())
def test_every_cited_module_or_name_exists(name: str) -> None:
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            module = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        target = module
        for attribute in parts[cut:]:
            assert hasattr(target, attribute), f"{name} is cited in docs/ but {attribute!r} does not exist"
            target = getattr(target, attribute)
        return
    pytest.fail(f"{name} is cited in docs/ but no such module exists")

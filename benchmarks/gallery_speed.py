"""Benchmark: the review gallery (issue 23) on a real set - time to write it, its size on disk, time until the page
is interactive in headless Chromium, and the most cards in the DOM while paging through every page.

The labels are the data set's own ground-truth masks with a made-up score (seeded), the ground truth is the same
file, so every card carries an IoU and a ground-truth outline (the most work a card can take). Timed:
  - `gallery_main` in this process, into an empty folder, then again into the same folder (a rerun rewrites the
    cards in place); wall seconds and CPU seconds (this process and its workers), since the machine is shared;
  - the whole `mal gallery` command as a user runs it (Python start, imports, reading, checks, writing).
In Chromium (Playwright driving the system `chromium`): `window.__malReadyAt` (ms from navigation start until the
first page is drawn and the keys work) in fresh profiles, then every page turned with the `n` key inside the page.

Writes benchmarks/results/gallery_speed.{json,md}. Usage:
    .venv/bin/python benchmarks/gallery_speed.py [--data ../shared/data/dsb2018_dev] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import REPO_ROOT, write_results

from mal.gallery.command import gallery_main

DEFAULT_DATA = Path("/work/shared/data/dsb2018_dev")
WORK = REPO_ROOT / "benchmarks" / "out" / "gallery_speed"


def _cpu_seconds() -> tuple[float, float]:
    """CPU seconds of this process, and of its children that have exited (the workers, the `mal` command)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def _make_labels(data: Path, folder: Path) -> Path:
    truth = json.loads((data / "annotations.json").read_text())
    rng = random.Random(0)
    for annotation in truth["annotations"]:
        annotation["score"] = round(rng.random(), 4)
    path = folder / "labels.json"
    path.write_text(json.dumps(truth))
    return path


def _timed(action) -> dict[str, float]:
    (own, children), wall = _cpu_seconds(), time.perf_counter()
    action()
    wall = time.perf_counter() - wall
    own_after, children_after = _cpu_seconds()
    return {"wall_s": wall, "cpu_s": own_after - own + children_after - children, "cpu_parent_s": own_after - own,
            "cpu_children_s": children_after - children}


def _folder_size(folder: Path) -> dict[str, Any]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    thumbs = [p for p in files if p.suffix == ".jpg"]
    return {
        "index_html_bytes": (folder / "index.html").stat().st_size,
        "data_js_bytes": (folder / "data.js").stat().st_size,
        "thumbs_files": len(thumbs),
        "thumbs_bytes": sum(p.stat().st_size for p in thumbs),
        "total_bytes": sum(p.stat().st_size for p in files),
    }


def _browser_figures(index: Path, runs: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    ready, loads, walks = [], [], {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        for _ in range(runs):
            page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
            started = time.perf_counter()
            page.goto(index.resolve().as_uri())
            page.wait_for_selector("html[data-ready=true]")
            loads.append(time.perf_counter() - started)
            ready.append(page.evaluate("window.__malReadyAt"))
            assert not page.inner_text("#errors"), page.inner_text("#errors")
            page.context.close()
        for per in (100, 200):
            page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
            page.goto(index.resolve().as_uri() + f"#per={per}")
            page.wait_for_selector("html[data-ready=true]")
            walks[per] = page.evaluate("""() => {
                const seen = new Set(), label = () => document.getElementById('page-label').textContent;
                let most = 0, pages = 1;
                const started = performance.now();
                for (;;) {
                    const cards = document.querySelectorAll('.card');
                    most = Math.max(most, cards.length);
                    cards.forEach(c => seen.add(c.dataset.index));
                    const before = label();
                    document.dispatchEvent(new KeyboardEvent('keydown', {key: 'n', bubbles: true}));
                    if (label() === before) { break; }
                    pages += 1;
                }
                return {pages, most_cards_in_dom: most, distinct_cards_seen: seen.size,
                        ms_per_page_turn: (performance.now() - started) / pages};
            }""")
            page.context.close()
        browser.close()
    return {
        "interactive_ms": ready,
        "interactive_ms_median": statistics.median(ready),
        "goto_to_ready_s": loads,
        "paging": walks,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a COCO folder: annotations.json, images/")
    parser.add_argument("--runs", type=int, default=3, help="page loads in Chromium (fresh profiles)")
    args = parser.parse_args()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    labels = _make_labels(args.data, WORK)
    truth, images, out = args.data / "annotations.json", args.data / "images", WORK / "gallery"
    masks = len(json.loads(labels.read_text())["annotations"])

    fresh = _timed(lambda: gallery_main(labels, images, out, gt_path=truth))
    sizes = _folder_size(out)
    rerun = _timed(lambda: gallery_main(labels, images, out, gt_path=truth))
    command_out = WORK / "gallery_cli"
    command = [str(REPO_ROOT / ".venv" / "bin" / "mal"), "gallery", str(labels), str(images), "--out",
               str(command_out), "--gt", str(truth)]
    cli = _timed(lambda: subprocess.run(command, check=True, capture_output=True))
    browser = _browser_figures(out / "index.html", args.runs)

    writes = [
        {"what": "gallery_main, empty folder", **fresh},
        {"what": "gallery_main, rerun in the same folder", **rerun},
        {"what": "`mal gallery` command (whole process)", **cli},
    ]
    paging = [{"per page": per, **figures} for per, figures in browser["paging"].items()]
    payload = {"data": str(args.data), "masks": masks, "writes": writes, "size": sizes, "browser": browser}
    notes = [
        f"{masks:,} masks of {args.data.name}; labels = its ground truth with a seeded random score; --gt = the "
        "same file, so every card has an IoU and a ground-truth outline.",
        "cpu_s counts this process (cpu_parent_s: reading, checks, data.js) and its exited children "
        "(cpu_children_s: the card workers, one per core, or the whole `mal` command): the machine is shared, so "
        "wall time depends on the load average above; CPU time does not.",
        f"Interactive: window.__malReadyAt over {args.runs} fresh profiles: {browser['interactive_ms']} ms.",
    ]
    write_results(
        "gallery_speed",
        payload,
        [
            ("Writing the gallery", ["what", "wall_s", "cpu_s", "cpu_parent_s", "cpu_children_s"], writes),
            ("Size on disk", list(sizes), [sizes]),
            ("Chromium: time to interactive", ["interactive_ms_median"], [browser]),
            ("Chromium: paging through every page with the n key", ["per page", "pages", "most_cards_in_dom",
                                                                    "distinct_cards_seen", "ms_per_page_turn"],
             paging),
        ],
        notes,
    )
    print(json.dumps({"writes": writes, "size": sizes, "interactive_ms": browser["interactive_ms"],
                      "paging": browser["paging"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

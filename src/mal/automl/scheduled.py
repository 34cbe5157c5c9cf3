"""A scheduled shared study: one `AutoMLRunner` whose platform is the store (`platforms.store.StorePlatform`), and
optionally a worker in the same process, which is exactly a local study with its jobs run by workers.

    run_scheduled_study(url, "hb", runner, run_kwargs, worker=StudyWorker(url, "hb", ...))

The runner decides everything (ask, report, tell, baseline, final evaluation) from its own run folder, so the
trials are those a local study of the same seed runs, and `mal automl resume RUN_DIR` continues it exactly. When
the runner ends it marks the study done (or stopped) and the workers leave once their jobs have ended.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from mal.automl.platforms.store import StorePlatform
from mal.automl.runner import AutoMLRunner
from mal.automl.worker import StudyWorker


def run_scheduled_study(
    runner: AutoMLRunner, run_kwargs: Mapping[str, Any], worker: StudyWorker | None = None, join_timeout: float = 600.0
) -> dict[str, Any]:
    """Run the study's scheduler here (and `worker` on a thread beside it); the runner's result dict."""
    platform = runner.platform
    if not isinstance(platform, StorePlatform):
        raise TypeError("a scheduled study's runner needs a StorePlatform")
    thread = None
    if worker is not None:
        thread = threading.Thread(target=worker.run, name="mal-worker", daemon=True)
        thread.start()
    outcome = "stopped"
    try:
        result = runner.run(**run_kwargs)
        outcome = "done"
        return result
    finally:
        platform.close(outcome)
        if thread is not None:
            thread.join(timeout=join_timeout)

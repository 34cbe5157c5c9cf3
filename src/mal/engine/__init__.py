"""mal.engine: one module per action (train, evaluate, inference, export, ...) on top of Lightning."""

from __future__ import annotations

import logging
import warnings

# Lightning's advice aimed at generic users; here the cases are deliberate (the EMA teacher stays in eval mode,
# validation metrics are reduced by hand, results_dir/train is reused on resume).
for _pattern in (
    r".*module\(s\) in eval mode.*",
    r".*sync_dist=True.*",
    r".*LeafSpec.*",
    r".*Checkpoint directory .* exists and is not empty.*",
    r".*does not have many workers.*",
    r".*was configured so 100% of the batches will be used.*",
    r".*Grad strides do not match bucket view strides.*",
):
    warnings.filterwarnings("ignore", message=_pattern)
logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
logging.getLogger("lightning.fabric.utilities.rank_zero").setLevel(logging.WARNING)

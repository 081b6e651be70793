"""argv of the tiny real searches the CLI tests run (a module, not a fixture: tests pass
their own proxy widths and extra options)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def search_argv(root: Path, out: Path, proxy: dict[str, Any], *extra: str) -> list[str]:
    """``attnas search fit`` on the synthetic data in ``root`` (8 frames, 16 px, batches of
    4, 2 nodes, one epoch of 2 batches), run folders under ``out``."""
    return ["search", "fit", f"--data.root={root}", "--data.num_frames=8",
            "--data.crop_size=16", "--data.batch_size=4", "--data.num_workers=0",
            "--data.search=true", "--data.cache=memory",
            f"--model.backbone_kwargs={json.dumps(proxy)}", "--model.num_nodes=2",
            "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={out}", f"--trainer.logger.init_args.save_dir={out}",
            *extra]

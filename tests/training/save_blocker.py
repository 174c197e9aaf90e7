"""A test-only ``model_checkpoint`` dataset that stops a run at the moment the checkpoint save starts.

Kedro logs "Saving data to model_checkpoint" and calls ``save``; this one creates the version
folder as a real save does, writes its process id to ``signal_file`` and then waits, so a test that
watches for that file kills the run exactly there, every time, with no sleep to tune.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from kedro.io.core import get_filepath_str

from timam.io.checkpoint_dataset import ModelCheckpointDataset
from timam.models.checkpoint import Checkpoint

# How long the save waits for the test's SIGKILL before failing on its own (no orphan run hangs).
WAIT_SECONDS = 300


class BlockingCheckpointDataset(ModelCheckpointDataset):
    """``ModelCheckpointDataset`` whose save announces itself in ``signal_file`` and never writes."""

    def __init__(self, *, signal_file: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.signal_file = Path(signal_file)

    def save(self, data: Checkpoint) -> None:
        target = Path(get_filepath_str(self._get_save_path(), "file"))
        target.parent.mkdir(parents=True, exist_ok=True)  # the empty version folder a kill leaves
        self.signal_file.write_text(str(os.getpid()))
        time.sleep(WAIT_SECONDS)
        raise TimeoutError(f"{self.signal_file}: nobody killed the run within {WAIT_SECONDS} s")

"""The logs of a `p2p train` run: loss_log.jsonl and, with --tensorboard, a TensorBoard event file
(hand-written plumbing: no lesson teaches it).

loss_log.jsonl holds one JSON record a line: "train" (the mean losses every --print_freq iterations),
"epoch" (an epoch's mean losses, learning rates and val_L1 / val_PSNR), "final" (the validation where a run
stopped between two epochs) and "resume". With --tensorboard the same numbers go to
CHECKPOINTS_DIR/NAME/tensorboard/ as scalars (TYPE/NAME, at the iteration), every validation score also as
val/L1 and val/PSNR (the latest one is what the HPARAMS tab shows), the run's options as hyperparameters,
and the sample grids as images (`RunLog.image`). Only rank 0 writes.
"""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

from p2p_lib.rundir import describe_write_error

__all__ = ["SaveFailed", "RunLog", "read_log", "hyperparameters", "VAL_METRIC_TAGS"]

# The scalar tags that always hold the latest validation scores, whichever record brought them.
VAL_METRIC_TAGS = {"val_L1": "val/L1", "val_PSNR": "val/PSNR"}
COUNTERS = ("step", "epoch", "epoch_iter")


class SaveFailed(Exception):
    """A checkpoint or log could not be written (disk full, read-only, ...): the files saved before are intact."""


def read_log(path: str | os.PathLike) -> list[dict]:
    "The records of loss_log.jsonl; a line still being written (or damaged: no whole-number step) is skipped."
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return []
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and isinstance(record.get("epoch", 0), int):
            records.append(record)
    return records


def hyperparameters(opts: dict) -> dict:
    """The run's options TensorBoard can show as hyperparameters: numbers, strings and booleans (None and
    lists left out; an infinite --max_dataset_size as the string 'inf')."""
    kept = {}
    for key, value in opts.items():
        if isinstance(value, float) and not math.isfinite(value):
            kept[key] = str(value)
        elif isinstance(value, (bool, int, float, str)):
            kept[key] = value
    return kept


class RunLog:
    "loss_log.jsonl (and TensorBoard with opts['tensorboard']), written by rank 0 only."

    def __init__(self, run_dir: Path, opts: dict, main_process: bool):
        self.file = self.writer = None
        if not main_process:
            return
        self.file = open(run_dir / "loss_log.jsonl", "a", encoding="utf-8")
        if opts.get("tensorboard"):
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:
                print("note: --tensorboard: TensorBoard is not installed (pip install tensorboard); logging to "
                      "loss_log.jsonl only", file=sys.stderr, flush=True)
                return
            self._write_hyperparameters(opts)

    def _write_hyperparameters(self, opts: dict) -> None:
        """The options and the metrics they are judged by, in this run's own event file (SummaryWriter.add_hparams
        would start another run folder): the HPARAMS tab shows the latest val/L1 and val/PSNR beside them."""
        from torch.utils.tensorboard.summary import hparams
        metrics = {tag: 0.0 for tag in VAL_METRIC_TAGS.values()}  # only the names count: the values are the scalars
        for summary in hparams(hyperparameters(opts), metrics):
            self.writer.file_writer.add_summary(summary)

    def write(self, record: dict) -> None:
        if self.file is not None:
            try:
                self.file.write(json.dumps(record) + "\n")
                self.file.flush()
            except OSError as err:
                raise SaveFailed(f"could not write {self.file.name}: {describe_write_error(err, Path(self.file.name).parent)}") from None
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in COUNTERS:
                    self.writer.add_scalar(f"{record['type']}/{key}", value, record["step"])
            for key, tag in VAL_METRIC_TAGS.items():
                if key in record:
                    self.writer.add_scalar(tag, record[key], record["step"])

    def image(self, tag: str, picture, step: int) -> None:
        "An (H, W, 3) uint8 picture for TensorBoard's IMAGES tab (nothing without --tensorboard)."
        if self.writer is not None:
            self.writer.add_image(tag, picture, step, dataformats="HWC")

    @property
    def tensorboard(self) -> bool:
        return self.writer is not None

    def close(self) -> None:
        for handle in (self.file, self.writer):
            if handle is not None:
                handle.close()

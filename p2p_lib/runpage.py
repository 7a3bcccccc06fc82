"""CHECKPOINTS_DIR/NAME/web/index.html: the results page `p2p train` keeps current while it trains
(hand-written plumbing: no lesson teaches it).

It is the official code's training page (util/visualizer.py and util/html.py) with the curves added. At the
top, the loss curves and the validation curves (val_L1, val_PSNR), drawn as inline SVG from loss_log.jsonl;
below, one section per epoch, the newest first, holding
  * the validation samples of the epoch's end: images/epochNNN.png (input | output | target, one val pair a
    row) with its val_L1 and val_PSNR, and where a run stopped inside the epoch, images/stepNNNNNN.png;
  * the training visuals: real_A, fake_B and real_B of the batch, saved every --update_html_freq iterations
    as web/images/epochNNN_real_A.png, ..._fake_B.png, ..._real_B.png (the official names: an epoch keeps its
    latest; the iteration is in the caption). fake_B is G's output for the batch's first input just after
    the step, in the paper's test mode (as validation runs it: seeded dropout, the batch's own statistics).
The page is rewritten every --display_freq iterations, at each epoch's end, when visuals are saved, and at
the run's start and end.

The page is rebuilt each time from the files (web/images/, images/, loss_log.jsonl), not from memory, so a
resumed run (--continue_train) keeps the earlier entries. Every file is written atomically (a temporary
file, then os.replace), the page last, so a browser reading it never gets half a file or an image that is
not there yet. While the run trains the page reloads itself (<meta http-equiv="refresh">, as the official
one); the page written at the end does not. Only rank 0 writes; --no_html writes no web/ folder. A page
that cannot be written (web/ read-only, a file named web, ...) is reported once and given up: the training
goes on, and images/ and loss_log.jsonl still get everything.

    page = ResultsPage(run_dir, "Experiment name = facades")
    page.save_visuals(epoch, step, {"real_A": uint8_hwc, "fake_B": ..., "real_B": ...})
    page.write("training: iteration 1200")
"""
from __future__ import annotations

import html
import io
import math
import os
import re
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import nn

from p2p_lib.checkpoint import write_atomically
from p2p_lib.rundir import describe_write_error, remove_leftover_temporaries
from p2p_lib.runlog import read_log
from p2p_lib.train import Hooks, image_grid, run_step, translate_batch

__all__ = ["VISUAL_LABELS", "REFRESH_SECONDS", "curve_series", "svg_curve", "page_sections",
           "render_page", "ResultsPage", "WatchHooks"]

VISUAL_LABELS = ("real_A", "fake_B", "real_B")
REFRESH_SECONDS = 10  # the official page reloads every second; a training epoch rarely ends that often
MAX_POINTS = 600  # per curve: more than an SVG panel this size can show
# loss_log.jsonl keys that are not losses (counters, learning rates, speed; the val scores have their own curves)
NOT_LOSSES = {"type", "step", "epoch", "epoch_iter", "lr_G", "lr_D", "it_per_s", "seconds", "val_L1", "val_PSNR"}
VAL_SCORES = ("val_L1", "val_PSNR")
_VISUAL_FILE = re.compile(r"epoch(\d+)_(" + "|".join(VISUAL_LABELS) + r")\.png")
_GRID_FILE = re.compile(r"(epoch|step)(\d+)\.png")
STYLE = """body{font-family:sans-serif;margin:16px;color:#222}
h3{margin:20px 0 6px;border-top:1px solid #ccc;padding-top:10px}
.curves{display:flex;flex-wrap:wrap;gap:8px}
svg.curve{border:1px solid #ddd;background:#fff}
svg.curve text{font-size:11px;fill:#333} svg.curve .name{font-weight:bold}
svg.curve polyline{fill:none;stroke:#1f77b4;stroke-width:1.5} svg.curve circle{fill:#1f77b4}
figure{margin:6px 0 14px} figcaption{margin-bottom:4px}
.row{display:flex;flex-wrap:wrap;gap:8px} .row div{text-align:center;font-size:13px}
img.validation{width:480px;max-width:100%} img.training{width:256px}"""


def _text(value) -> str:
    "Text for HTML or SVG, escaped (run names and loss names are the user's)."
    return html.escape(str(value), quote=True)


# ----------------------------------------------------------------------------------------- the curves

def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def curve_series(records: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """Each loss (from the "train" records; the epoch means where there are none) and val_L1 / val_PSNR (from
    the "epoch" and "final" records) as (iteration, value) pairs by iteration. Of two records of the same
    iteration the later is kept: a stretch a resumed run trained again replaces the first try."""
    losses = [r for r in records if r.get("type") == "train"] or [r for r in records if r.get("type") == "epoch"]
    scores = [r for r in records if r.get("type") in ("epoch", "final")]
    points: dict[str, dict[int, float]] = {}
    for record in losses:
        for key, value in record.items():
            if key not in NOT_LOSSES and _number(value):
                points.setdefault(key, {})[record["step"]] = float(value)
    for record in scores:
        for key in VAL_SCORES:
            if _number(record.get(key)):
                points.setdefault(key, {})[record["step"]] = float(record[key])
    return {name: sorted(by_step.items()) for name, by_step in points.items()}


def _thinned(points: list[tuple[int, float]]) -> list[tuple[int, float]]:
    "At most about MAX_POINTS of `points`, evenly spaced, the last one kept."
    stride = -(-len(points) // MAX_POINTS)
    return points if stride == 1 else points[::stride] + ([points[-1]] if (len(points) - 1) % stride else [])


def svg_curve(name: str, points: list[tuple[int, float]], width: int = 280, height: int = 150) -> str:
    "One curve as a small inline SVG chart: the name and last value, the value range, the first and last iteration."
    left, right, top, bottom = 50, 10, 22, 18
    last = points[-1][1]
    points = _thinned(points)
    xs, ys = [x for x, _ in points], [y for _, y in points]
    x0, x1, y0, y1 = xs[0], xs[-1], min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        pad = abs(y0) * 0.05 or 1.0
        y0, y1 = y0 - pad, y1 + pad
    sx, sy = (width - left - right) / (x1 - x0), (height - top - bottom) / (y1 - y0)
    coords = [(left + (x - x0) * sx, height - bottom - (y - y0) * sy) for x, y in points]
    line = (f'<polyline points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in coords)}"/>' if len(coords) > 1 else
            f'<circle cx="{coords[0][0]:.1f}" cy="{coords[0][1]:.1f}" r="2.5"/>')
    return (f'<svg class="curve" data-name="{_text(name)}" data-points="{len(points)}" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{_text(name)} by iteration">'
            f'<text class="name" x="{left}" y="14">{_text(name)}: {last:.4g}</text>'
            f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" '
            f'fill="none" stroke="#bbb"/>'
            f'<text x="{left - 4}" y="{top + 9}" text-anchor="end">{y1:.3g}</text>'
            f'<text x="{left - 4}" y="{height - bottom}" text-anchor="end">{y0:.3g}</text>'
            f'<text x="{left}" y="{height - 4}">{xs[0]}</text>'
            f'<text x="{width - right}" y="{height - 4}" text-anchor="end">iteration {xs[-1]}</text>'
            f'{line}</svg>')


# ----------------------------------------------------------------------------------------- the sections

@dataclass
class Row:
    "A row of pictures on the page: a caption, then each file with its label ('validation' or 'training' pictures)."
    caption: str
    kind: str
    files: list[tuple[Path, str]] = field(default_factory=list)


def _epoch_of_step(step: int, records: list[dict]) -> int:
    """The epoch a run was in at `step`: the "final" record's (written with the grid), else the one after the
    last epoch that ended before it."""
    final = [r["epoch"] for r in records if r.get("type") == "final" and r["step"] == step and "epoch" in r]
    if final:
        return int(final[-1])
    ended = [int(r["epoch"]) for r in records if r.get("type") == "epoch" and r["step"] < step and "epoch" in r]
    return max(ended, default=0) + 1


def _scores(record: dict | None) -> str:
    if not record or not _number(record.get("val_L1")):
        return ""
    psnr = f", val_PSNR {record['val_PSNR']:.2f} dB" if _number(record.get("val_PSNR")) else ""
    return f": val_L1 {record['val_L1']:.4f}{psnr}"


def _validation_rows(images_dir: Path, records: list[dict]) -> dict[int, list[Row]]:
    "The validation grids in images/ by epoch: each epoch's end, then where a run stopped inside it."
    ends = {int(r["epoch"]): r for r in records if r.get("type") == "epoch" and "epoch" in r}
    stops = {r["step"]: r for r in records if r.get("type") == "final"}
    rows: dict[int, list[Row]] = {}
    for path in sorted(_listing(images_dir), reverse=True):  # the later stops of an epoch first
        match = _GRID_FILE.fullmatch(path.name)
        if not match:
            continue
        number, shown = int(match.group(2)), [(path, "validation samples")]
        if match.group(1) == "epoch":
            record = ends.get(number)
            where = f" (iteration {record['step']})" if record else ""
            caption = f"validation at the end of epoch {number}{where}{_scores(record)}; input | output | target"
            rows.setdefault(number, []).insert(0, Row(caption, "validation", shown))
        else:
            caption = (f"validation where the run stopped, iteration {number}{_scores(stops.get(number))}; "
                       f"input | output | target")
            rows.setdefault(_epoch_of_step(number, records), []).append(Row(caption, "validation", shown))
    return rows


def _listing(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if p.is_file()]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _iteration_of(path: Path) -> str | None:
    "The iteration save_visuals wrote into the PNG's text (read from the header, without decoding the image)."
    from PIL import Image
    try:
        with Image.open(path) as image:
            return image.info.get("iteration")
    except OSError:
        return None


def _training_rows(web_images: Path) -> dict[int, Row]:
    "The training visuals in web/images/ by epoch: real_A, fake_B, real_B of the latest batch saved."
    by_epoch: dict[int, dict[str, Path]] = {}
    for path in _listing(web_images):
        match = _VISUAL_FILE.fullmatch(path.name)
        if match:
            by_epoch.setdefault(int(match.group(1)), {})[match.group(2)] = path
    rows = {}
    for epoch, files in by_epoch.items():
        iteration = _iteration_of(files.get("real_A") or next(iter(files.values())))
        caption = "training batch" + (f", iteration {iteration}" if iteration else "") + ": the first pair of the batch"
        rows[epoch] = Row(caption, "training", [(files[label], label) for label in VISUAL_LABELS if label in files])
    return rows


def page_sections(run_dir: str | os.PathLike, records: list[dict]) -> list[tuple[int, list[Row]]]:
    "(epoch, its rows) for every epoch with pictures on disk, the newest epoch first."
    run_dir = Path(run_dir)
    sections = _validation_rows(run_dir / "images", records)
    for epoch, row in _training_rows(run_dir / "web" / "images").items():
        sections.setdefault(epoch, []).append(row)
    return sorted(sections.items(), reverse=True)


# ----------------------------------------------------------------------------------------- the page

def _source(path: Path, web_dir: Path) -> str:
    """The picture's address relative to the page, with its modification time as a query: a reloaded page shows
    a picture overwritten since (the training visuals of an epoch), not the browser's cached copy."""
    relative = Path(os.path.relpath(path, web_dir)).as_posix()
    try:
        version = f"?v={path.stat().st_mtime_ns}"
    except OSError:
        version = ""
    return urllib.parse.quote(relative) + version


def _render_row(row: Row, web_dir: Path) -> list[str]:
    lines = [f'<figure class="{_text(row.kind)}"><figcaption>{_text(row.caption)}</figcaption><div class="row">']
    for path, label in row.files:
        source = _text(_source(path, web_dir))
        named = f"<br>{_text(label)}" if len(row.files) > 1 else ""  # a lone picture's caption says what it is
        lines.append(f'<div><a href="{source}"><img class="{_text(row.kind)}" src="{source}" alt="{_text(label)}">'
                     f'</a>{named}</div>')
    lines.append("</div></figure>")
    return lines


def render_page(title: str, status: str, refresh_seconds: int, sections, series, web_dir: Path) -> str:
    "The page's HTML: every text escaped; `refresh_seconds` 0 for a page that does not reload itself."
    lines = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">']
    if refresh_seconds > 0:
        lines.append(f'<meta http-equiv="refresh" content="{int(refresh_seconds)}">')
    lines += [f"<title>{_text(title)}</title>", f"<style>{STYLE}</style>", "</head><body>",
              f"<h1>{_text(title)}</h1>", f'<p id="status">{_text(status)}</p>', '<section id="curves">']
    if series:
        lines += ['<div class="curves">', *(svg_curve(name, points) for name, points in series.items()), "</div>"]
    else:
        lines.append("<p>No losses logged yet (every --print_freq iterations, and at each epoch's end).</p>")
    lines.append("</section>")
    for epoch, rows in sections:
        lines.append(f'<section class="epoch" id="epoch{epoch}"><h3>epoch [{epoch}]</h3>')
        for row in rows:
            lines += _render_row(row, web_dir)
        lines.append("</section>")
    lines.append("</body></html>")
    return "\n".join(lines) + "\n"


def _png_bytes(picture: np.ndarray, iteration: int) -> bytes:
    from PIL import Image, PngImagePlugin
    info = PngImagePlugin.PngInfo()
    info.add_text("iteration", str(iteration))
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(picture)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


class ResultsPage:
    "RUN_DIR/web/index.html and the training visuals in RUN_DIR/web/images/, every file written atomically."

    def __init__(self, run_dir: str | os.PathLike, title: str, refresh_seconds: int | None = None):
        self.run_dir, self.title = Path(run_dir), title
        self.refresh_seconds = REFRESH_SECONDS if refresh_seconds is None else refresh_seconds
        self.web_dir = self.run_dir / "web"
        self.images_dir = self.web_dir / "images"

    def remove_leftovers(self) -> list[str]:
        "The temporary files a killed write left in web/ (call it holding the run folder's lock)."
        return remove_leftover_temporaries(self.web_dir) + remove_leftover_temporaries(self.images_dir)

    def save_visuals(self, epoch: int, iteration: int, visuals: dict) -> None:
        "(H, W, 3) uint8 pictures by label as web/images/epochNNN_LABEL.png (the epoch's previous ones replaced)."
        for label, picture in visuals.items():
            data = _png_bytes(picture, iteration)
            write_atomically(self.images_dir / f"epoch{epoch:03d}_{label}.png", lambda fh: fh.write(data))

    def write(self, status: str, running: bool = True) -> Path:
        "Rebuild index.html from the files; a page of a run that is not `running` does not reload itself."
        records = read_log(self.run_dir / "loss_log.jsonl")
        text = render_page(self.title, status, self.refresh_seconds if running else 0,
                           page_sections(self.run_dir, records), curve_series(records), self.web_dir)
        return write_atomically(self.web_dir / "index.html", lambda fh: fh.write(text.encode("utf-8")))


# ----------------------------------------------------------------------------------------- the hook

def _unwrapped(G: nn.Module) -> nn.Module:
    "The network itself under DistributedDataParallel: rank 0 runs it alone, without the other processes."
    return G.module if isinstance(G, nn.parallel.DistributedDataParallel) else G


def _read_picture(path: Path) -> np.ndarray:
    from PIL import Image
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


class WatchHooks(Hooks):
    """What `p2p train` shows besides the terminal while it trains: the results page (unless --no_html) and
    the sample pictures in TensorBoard (with --tensorboard), written by rank 0. A hook of lesson 06's fit
    placed after the engine's own, so that an epoch's validation grid and log record are on disk when the
    page is rebuilt. `watching(step)` wraps fit's step to keep the batch the next training visuals show."""

    def __init__(self, opts: dict, run_dir: Path, log, main_process: bool, run):
        self.opts, self.run_dir, self.log, self.batch, self.page = opts, Path(run_dir), log, None, None
        self.total_epochs = opts["n_epochs"] + opts["n_epochs_decay"]
        self.visual_freq, self.display_freq = opts.get("update_html_freq") or 1000, opts.get("display_freq") or 400
        if main_process and not opts.get("no_html"):
            self.page = ResultsPage(run_dir, f"Experiment name = {opts['name']}")
            self.page.remove_leftovers()
            self._write_page(run)
        # with SyncBatchNorm rank 0 cannot run G alone: it would wait for the other processes
        self.visuals = main_process and (self.page is not None or log.tensorboard) and not opts.get("sync_bn")

    def watching(self, step=None):
        "fit's step (None: lesson 06's run_step), keeping the batch of every --update_html_freq-th iteration."
        if not self.visuals:
            return step
        inner = run_step if step is None else step

        def step_and_keep_batch(run, real_A, real_B):
            if (run.step + 1) % self.visual_freq == 0 and (self.page is not None or self.log.tensorboard):
                self.batch = (real_A, real_B)
            return inner(run, real_A, real_B)
        return step_and_keep_batch

    def after_step(self, run, losses):
        if self.batch is not None and run.step % self.visual_freq == 0:
            self._save_visuals(run, *self.batch)
            self.batch = None
            self._write_page(run)
        elif run.step % self.display_freq == 0:
            self._write_page(run)

    def after_epoch(self, run, epoch):
        self._grid_to_tensorboard(f"epoch{epoch:03d}.png", epoch)  # written by the engine's hook just before
        self._write_page(run)

    def finish(self, run) -> None:
        "At the run's end: the validation grid where it stopped (if any) to TensorBoard, the page's last version."
        if run.epoch_iter:
            self._grid_to_tensorboard(f"step{run.step:06d}.png", run.epoch)
        self._write_page(run, running=False)

    def _grid_to_tensorboard(self, name: str, epoch: int) -> None:
        "A validation grid of images/ as TensorBoard's val/samples at `epoch` (none: validation is off)."
        path = self.run_dir / "images" / name
        if self.log.tensorboard and path.is_file():
            try:
                self.log.image("val/samples", _read_picture(path), epoch)
            except OSError as err:  # a picture TensorBoard misses is no reason to stop training
                print(f"note: --tensorboard: cannot read {path}: {err}", file=sys.stderr, flush=True)

    def _save_visuals(self, run, real_A, real_B) -> None:
        real_A, real_B = real_A[:1], real_B[:1]
        fake_B = translate_batch(_unwrapped(run.G), real_A, seed=self.opts["seed"])
        self.log.image("train/visuals", image_grid(real_A, fake_B, real_B).numpy(), run.step)
        if self.page is not None:
            pictures = {label: image_grid(x).numpy() for label, x in zip(VISUAL_LABELS, (real_A, fake_B, real_B))}
            try:
                self.page.save_visuals(run.epoch, run.step, pictures)
            except OSError as err:
                self._give_up(err)

    def _write_page(self, run, running: bool = True) -> None:
        if self.page is None:
            return
        now = time.strftime("%Y-%m-%d %H:%M:%S")
        if running:
            status = (f"training: epoch {min(run.epoch, self.total_epochs)} of {self.total_epochs}, iteration "
                      f"{run.step}; written {now}; this page reloads every {self.page.refresh_seconds} s")
        else:
            status = (f"not training: stopped at iteration {run.step}, {run.epoch - 1} of {self.total_epochs} "
                      f"epochs done; written {now}")
        try:
            self.page.write(status, running)
        except OSError as err:
            self._give_up(err)

    def _give_up(self, err: OSError) -> None:
        "A page that cannot be written stops nothing but itself: say so once, and write it no more."
        where = self.page.web_dir
        print(f"note: the results page cannot be written to {where}: {describe_write_error(err, self.run_dir)}; "
              f"training goes on without it (images/ and loss_log.jsonl still get the samples and losses)",
              file=sys.stderr, flush=True)
        self.page = None

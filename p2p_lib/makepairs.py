"""`p2p make-pairs`: make a pix2pix training set for one of lesson 09's tasks from a folder of photos
(hand-written plumbing; the transforms are lesson 09's, in `p2p_lib.tasks`).

    p2p make-pairs --task colorize photos/ datasets/my_colorize
    p2p make-pairs --task edges --half left datasets/facades datasets/facades_edges   # facades: photo = left half

Each photo becomes one aligned A|B file: A (left) the task's input made from the photo (gray, masked,
edges, stylised, 4x degraded), B (right) the photo itself, so `p2p train --direction AtoB` learns
input -> photo. The layout is the one `p2p combine` writes: split subfolders of SRC (train/, val/, ...) are
mirrored into DEST; a SRC that holds images and no split folders gives a flat DEST. Outputs are PNG
(lossless: a JPEG would blur thin edges and mask borders), named after the photo (x.jpg -> x.png).

Checked before anything is written (a refused job writes nothing): SRC is a folder with images, no
output exists already (unless --overwrite), and two photos do not map to one output
name (x.jpg and x.png). Each output is written to a temporary file and renamed into place; a photo that
cannot be decoded stops the job naming it, and every pair written before it is complete. SRC is only
read, and DEST may not lie inside it.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from p2p_lib.combine import IMAGE_EXTENSIONS, CombineError, list_folder, read_rgb, save_atomic, shown_names
from p2p_lib.optiontypes import number
from p2p_lib.tasks import TASKS, photo_half, task_input

MIN_SIDE = 16  # px: smaller photos cannot be 4x downsampled into anything useful, nor trained on


class MakePairsError(ValueError):
    """The job was refused (nothing written) or stopped (the pairs written before it are complete)."""


@dataclass(frozen=True)
class Job:
    photos: list[tuple[Path, Path]]   # (photo, output A|B file)
    splits: dict[str, int]            # split folder ('' when flat) -> photos


def _images_in(folder: Path) -> list[Path]:
    "The image files directly in folder, sorted (combine's listing; a broken link is no file, and is left out)."
    return [p for p in list_folder(folder)[0] if p.is_file()]


def plan_pairs(src: Path, dest: Path, overwrite: bool = False, num_imgs: int | None = None) -> Job:
    """What make_pairs would write, checked as a whole; MakePairsError (listing the problems) if refused."""
    src, dest = Path(src), Path(dest)
    if not src.is_dir():
        raise MakePairsError(f"{src} is not a folder of photos")
    if dest.exists() and not dest.is_dir():
        raise MakePairsError(f"{dest} is a file, where the output folder should be")
    if dest.resolve() == src.resolve():
        raise MakePairsError(f"DEST is SRC ({src}): write the pairs into another folder")
    if dest.resolve().is_relative_to(src.resolve()):
        raise MakePairsError(f"DEST ({dest}) is inside SRC ({src}): a second run would read the pairs as photos")
    splits = [d for d in list_folder(src)[2] if _images_in(d)]
    folders = [(d, dest / d.name, d.name) for d in splits] if splits and not _images_in(src) else [(src, dest, "")]
    photos, counts, clashes = [], {}, []
    for folder, out, split in folders:
        images = _images_in(folder)[:num_imgs]
        outputs = [out / f"{p.stem}.png" for p in images]
        clashes += [str(o) for o in outputs if outputs.count(o) > 1]
        photos += list(zip(images, outputs))
        counts[split] = len(images)
    if not photos:
        raise MakePairsError(f"no photos in {src} (looked for {', '.join(IMAGE_EXTENSIONS)} files, and in its "
                             "split subfolders)")
    problems = []
    if clashes:
        problems.append(f"two photos map to one output name: {shown_names(sorted(set(clashes)))} (rename one of each)")
    existing = [str(o) for _, o in photos if o.exists()]
    if existing and not overwrite:
        problems.append(f"{len(existing)} output(s) exist already: {shown_names(existing)} (--overwrite replaces them)")
    if problems:
        raise MakePairsError("refused, nothing written:\n  " + "\n  ".join(problems))
    return Job(photos, counts)


def make_pair(task: str, photo_path: Path, out: Path, half: str | None = None, seed: int = 0) -> None:
    """One photo -> one A|B file: A = the task's input made from the photo, B = the photo."""
    try:
        photo = read_rgb(photo_path)
        photo = photo_half(photo, half) if half else photo
    except (CombineError, ValueError) as err:
        raise MakePairsError(f"{photo_path}: {err}") from None
    if min(photo.size) < MIN_SIDE:
        raise MakePairsError(f"{photo_path}: {photo.width}x{photo.height} px is too small (at least "
                             f"{MIN_SIDE} px a side)")
    made = task_input(task, photo, key=photo_path.stem, seed=seed)  # the stem: the same from x.jpg or its x.png pair
    pair = Image.new("RGB", (2 * photo.width, photo.height))
    pair.paste(made, (0, 0))
    pair.paste(photo, (photo.width, 0))
    save_atomic(pair, out)


def make_pairs(task: str, src, dest, half: str | None = None, seed: int = 0, overwrite: bool = False,
               num_imgs: int | None = None) -> Job:
    """Check the whole job (MakePairsError, writing nothing, if refused), then write every pair."""
    if task not in TASKS:
        raise MakePairsError(f"unknown task {task!r}; the tasks are {', '.join(TASKS)}")
    job = plan_pairs(Path(src), Path(dest), overwrite, num_imgs)
    for folder in sorted({out.parent for _, out in job.photos}):
        folder.mkdir(parents=True, exist_ok=True)
    for photo, out in job.photos:
        make_pair(task, photo, out, half, seed)
    return job


def _run(args: argparse.Namespace) -> int:
    try:
        job = make_pairs(args.task, args.src, args.dest, args.half, args.seed, args.overwrite, args.num_imgs)
    except MakePairsError as err:
        written = "" if str(err).startswith("refused") else " Pairs written before this are complete."
        print(f"p2p make-pairs: {err}{written}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("p2p make-pairs: interrupted; every pair written so far is complete (no partial files)",
              file=sys.stderr)
        return 130
    for split, count in job.splits.items():
        print(f"{split or 'pairs'}: {count} {args.task} pairs -> {Path(args.dest) / split}")
    print(f"train with: p2p train --dataroot {args.dest} --direction AtoB --name {Path(args.dest).name}")
    return 0


def register_cli(subparsers) -> None:
    parser = subparsers.add_parser(
        "make-pairs", help="make A|B training pairs for a task (colorize, inpaint, ...) from a folder of photos",
        description="Turn each photo of SRC into an aligned A|B file in DEST: A the task's input made from the "
                    "photo, B the photo. colorize: gray; inpaint: random gray rectangles (the same for the same "
                    "file name and --seed); edges: Canny edges, black on white; stylize: a posterised rendering "
                    "with outlines; superres: bicubic 4x down and up again. Split folders of SRC are mirrored.")
    parser.add_argument("src", type=Path, help="folder of photos (or of split folders of them)")
    parser.add_argument("dest", type=Path, help="output folder")
    parser.add_argument("--task", required=True, choices=TASKS, help="which input to make from each photo")
    parser.add_argument("--half", choices=("left", "right"), default=None,
                        help="SRC holds A|B files: take the photo from this half (facades: left)")
    parser.add_argument("--seed", type=number(int, 0), default=0, help="inpainting's rectangles (default 0)")
    parser.add_argument("--num_imgs", type=number(int, 1), default=None, help="use at most this many photos per split")
    parser.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    parser.set_defaults(func=_run)

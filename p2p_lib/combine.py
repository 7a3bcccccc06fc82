"""`p2p combine`: make aligned A|B training pairs from two folders (hand-written plumbing).

pix2pix reads each training example as ONE image, A on the left and B on the right, same size. If
your data comes as two folders (A/ photos, B/ label maps, ...), this writes those side-by-side files:

    p2p combine --fold_A A --fold_B B --fold_AB datasets/mine

- Layout, as the official `datasets/combine_A_and_B.py` expects: split subfolders (A/train,
  B/train -> OUT/train, and so on for every split folder of A), or flat folders (A/*.jpg, B/*.jpg ->
  OUT/*.jpg) when A holds images and no split folders.
- Pairing by file name: A/x.jpg goes with B/x.jpg. With `--use_AB` (official meaning) A/x_A.jpg goes
  with B/x_B.jpg and the pair is written as x.jpg (A and B may then be the same folder).
- `--num_imgs N` uses the first N pairs of each split (in sorted name order; the official script takes
  the first N in whatever order the file system lists them).
- `--no_multiprocessing` writes in a single thread. By default several threads write in parallel
  (Pillow releases the GIL while decoding and encoding; threads need no pickling and stop cleanly on
  Ctrl-C), where the official script uses a process pool.

What is written: an RGB image of width wA + wB and height hA (A left, B right); both inputs are read
as RGB (grey or RGBA inputs become 3-channel RGB, as the official script's cv2.IMREAD_COLOR does;
16-bit grayscale is scaled to 8 bits as cv2 does, not clipped), after
applying their EXIF orientation (as cv2 does, and as an image viewer shows them). The format follows
the output's extension (the extension of the A file): .jpg/.jpeg as JPEG at quality 95 without chroma
subsampling (4:4:4, so label colours keep sharp edges; re-encoding a JPEG always loses a little),
.png as lossless PNG, .ppm/.bmp/.tif/.tiff/.webp losslessly too. Each output is written to a temporary file
in its folder and renamed into place, so an interrupted run never leaves a half-written image.

Checked before anything is written (a refused job writes nothing): every file has a partner (the
names without one are listed), the two images of each pair have the same size (or, with `--resize`,
B is resized to A's size: bicubic by default, `--resize nearest` for label maps whose colours must
stay exact), no output already exists (an error names it, unless `--overwrite`), and the output
folder is not one of the input folders.

Two faults of the official script are fixed here. Its latest version ends with `pool.close()` even
when `--no_multiprocessing` means no pool was made, so that mode stops with
`NameError: name 'pool' is not defined` (official issue #1721). And it silently skips every A file
that has no B partner (and ignores B files without an A partner), so a misnamed folder gives a
smaller data set without a word.
"""
from __future__ import annotations

import argparse
import os
import secrets
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from p2p_lib.imagefiles import SIXTEEN_BIT_MODES, PairedDataError, convert_mode
from p2p_lib.optiontypes import number

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tif", ".tiff", ".webp")  # as p2p_lib.data reads
JPEG_QUALITY = 95
RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "nearest": Image.Resampling.NEAREST}
_SHOWN = 5  # names listed in an error message before "... and N more"


class CombineError(ValueError):
    """The combine job was refused; the message lists every problem found. Nothing was written."""


@dataclass(frozen=True)
class Pair:
    path_A: Path
    path_B: Path
    path_AB: Path
    size_A: tuple[int, int]
    size_B: tuple[int, int]


@dataclass
class CombinePlan:
    pairs: list[Pair]
    splits: dict[str, int]  # split ('' for flat folders) -> number of pairs written there
    ignored: list[Path]     # files that are not images, or (with use_AB) not named *_A / *_B


def list_folder(folder: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """(images, other files, subfolders) directly in folder, sorted; hidden entries are left out (p2p make-pairs
    lists its photo folders with it too)."""
    images, others, folders = [], [], []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            folders.append(entry)
        elif entry.suffix.lower() in IMAGE_EXTENSIONS:
            images.append(entry)
        else:
            others.append(entry)
    return images, others, folders


def _oriented_size(path: Path) -> tuple[int, int]:
    """Width and height as displayed (EXIF orientation applied), from the header only."""
    with Image.open(path) as img:
        width, height = img.size
        try:
            orientation = img.getexif().get(0x0112, 1)
        except Exception:  # a malformed EXIF block must not stop the job; the pixels are what count
            orientation = 1
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def shown_names(items: list[str]) -> str:
    "The first few items, comma-separated, and how many more: for the error messages of combine and make-pairs."
    more = f" ... and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _pairs_in(dir_A: Path, dir_B: Path, dir_AB: Path, use_AB: bool, num_imgs: int | None,
              problems: list[str], ignored: list[Path]) -> list[tuple[Path, Path, Path]]:
    images_A, others_A, _ = list_folder(dir_A)
    images_B, others_B, _ = list_folder(dir_B)
    shared = _same_folder(dir_A, dir_B)  # with --use_AB, x_A and x_B may sit in one folder
    ignored += others_A + ([] if shared else others_B)
    if use_AB:
        keyed_A = {p.stem[:-2] + p.suffix: p for p in images_A if p.stem.endswith("_A")}
        keyed_B = {p.stem[:-2] + p.suffix: p for p in images_B if p.stem.endswith("_B")}
        if shared:
            ignored += [p for p in images_A if not p.stem.endswith(("_A", "_B"))]
        else:
            ignored += [p for p in images_A if not p.stem.endswith("_A")]
            ignored += [p for p in images_B if not p.stem.endswith("_B")]
    else:
        keyed_A = {p.name: p for p in images_A}
        keyed_B = {p.name: p for p in images_B}
    lonely_A = sorted(set(keyed_A) - set(keyed_B))
    lonely_B = sorted(set(keyed_B) - set(keyed_A))
    if lonely_A:
        problems.append(f"{len(lonely_A)} files in {dir_A} have no partner in {dir_B}: "
                        f"{shown_names([keyed_A[k].name for k in lonely_A])}")
    if lonely_B:
        problems.append(f"{len(lonely_B)} files in {dir_B} have no partner in {dir_A}: "
                        f"{shown_names([keyed_B[k].name for k in lonely_B])}")
    names = sorted(set(keyed_A) & set(keyed_B))
    if num_imgs is not None:
        names = names[:num_imgs]
    return [(keyed_A[n], keyed_B[n], dir_AB / n) for n in names]


def plan_combine(fold_A: Path, fold_B: Path, fold_AB: Path, num_imgs: int | None = None,
                 use_AB: bool = False, resize: str | None = None, overwrite: bool = False) -> CombinePlan:
    """Check the whole job and return what to write; raise CombineError listing every problem."""
    fold_A, fold_B, fold_AB = Path(fold_A), Path(fold_B), Path(fold_AB)
    if resize is not None and resize not in RESAMPLE:
        raise CombineError(f"--resize must be one of {', '.join(RESAMPLE)}, not {resize!r}")
    if num_imgs is not None and num_imgs < 1:
        raise CombineError(f"--num_imgs must be at least 1, not {num_imgs}")
    for flag, folder in (("--fold_A", fold_A), ("--fold_B", fold_B)):
        if not folder.is_dir():
            raise CombineError(f"{flag} {folder} is not a folder")
    if fold_AB.exists() and not fold_AB.is_dir():
        raise CombineError(f"--fold_AB {fold_AB} exists and is not a folder")

    problems: list[str] = []
    ignored: list[Path] = []
    images_A, _, splits_A = list_folder(fold_A)
    if splits_A and images_A:
        raise CombineError(f"{fold_A} holds both images ({images_A[0].name}, ...) and split folders "
                           f"({splits_A[0].name}, ...); use one layout: A/*.jpg or A/<split>/*.jpg")
    if splits_A:
        _, _, splits_B = list_folder(fold_B)
        names_B = {p.name for p in splits_B}
        missing = [p.name for p in splits_A if p.name not in names_B]
        extra = sorted(names_B - {p.name for p in splits_A})
        if missing:
            problems.append(f"split folders of {fold_A} missing in {fold_B}: {shown_names(missing)}")
        if extra:
            problems.append(f"split folders of {fold_B} missing in {fold_A}: {shown_names(extra)}")
        jobs = [(p.name, p, fold_B / p.name, fold_AB / p.name) for p in splits_A if p.name in names_B]
    else:
        jobs = [("", fold_A, fold_B, fold_AB)]

    triples: list[tuple[str, Path, Path, Path]] = []
    for split, dir_A, dir_B, dir_AB in jobs:
        for folder in (dir_A, dir_B):
            if _same_folder(folder, dir_AB):
                raise CombineError(f"the output folder {dir_AB} is the input folder {folder}; "
                                   f"choose another --fold_AB")
        found = _pairs_in(dir_A, dir_B, dir_AB, use_AB, num_imgs, problems, ignored)
        triples += [(split, *t) for t in found]
    if not triples and not problems:
        problems.append(f"no image pairs found in {fold_A} and {fold_B} (images: {', '.join(IMAGE_EXTENSIONS)}"
                        f"{'; named *_A.* and *_B.*' if use_AB else ''})")

    pairs, unreadable, mismatched, existing = [], [], [], []
    for split, path_A, path_B, path_AB in triples:
        try:
            size_A, size_B = _oriented_size(path_A), _oriented_size(path_B)
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as err:
            unreadable.append(f"{path_A.name}/{path_B.name} ({type(err).__name__})")
            continue
        if size_A != size_B and resize is None:
            mismatched.append(f"{path_A.name} {size_A[0]}x{size_A[1]} vs {path_B.name} {size_B[0]}x{size_B[1]}")
        if path_AB.exists() and not overwrite:
            existing.append(str(path_AB))
        pairs.append(Pair(path_A, path_B, path_AB, size_A, size_B))
    if unreadable:
        problems.append(f"{len(unreadable)} pairs could not be read as images: {shown_names(unreadable)}")
    if mismatched:
        problems.append(f"{len(mismatched)} pairs differ in size (give --resize to resize B to A's size): "
                        f"{shown_names(mismatched)}")
    if existing:
        problems.append(f"{len(existing)} outputs already exist (give --overwrite to replace them): "
                        f"{shown_names(existing)}")
    if problems:
        raise CombineError("nothing was written:\n  " + "\n  ".join(problems))
    counts: dict[str, int] = {}
    for split, *_ in triples:
        counts[split] = counts.get(split, 0) + 1
    return CombinePlan(pairs, counts, ignored)


def save_atomic(img: Image.Image, path: Path) -> None:
    """Save `img` at `path` in the format its extension names, via a temporary file and a rename."""
    suffix = path.suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        fmt, options = "JPEG", {"quality": JPEG_QUALITY, "subsampling": 0}
    elif suffix == ".png":
        fmt, options = "PNG", {}
    elif suffix == ".webp":
        fmt, options = "WEBP", {"lossless": True}
    elif suffix in (".tif", ".tiff"):
        fmt, options = "TIFF", {}
    elif suffix == ".bmp":
        fmt, options = "BMP", {}
    elif suffix == ".ppm":
        fmt, options = "PPM", {}
    else:
        raise CombineError(f"{path}: no image format for the extension {path.suffix!r}")
    temporary = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    try:
        with open(temporary, "xb") as out:
            img.save(out, format=fmt, **options)
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def read_rgb(path: Path) -> Image.Image:
    """The image at `path` as RGB, its EXIF orientation applied. 16-bit grayscale is scaled to 8 bits
    (v * 255 / 65535, as the official script's cv2.imread does; Pillow's convert('RGB') would clip every
    value above 255 to white), with lesson 05's `convert_mode`; a float image, or one that cannot be
    decoded (a truncated JPEG), is refused by name."""
    try:
        with Image.open(path) as raw:
            img = ImageOps.exif_transpose(raw)
            if img.mode in SIXTEEN_BIT_MODES or img.mode == "F":
                img = convert_mode(img, 3, path)
            return img.convert("RGB")
    except PairedDataError as err:
        raise CombineError(str(err)) from None
    except (OSError, UnidentifiedImageError) as err:
        raise CombineError(f"cannot read {path}: {err}") from None


def combine_pair(pair: Pair, resize: str | None = None) -> None:
    """Read A and B, put them side by side (A left) and write the result atomically."""
    im_A, im_B = read_rgb(pair.path_A), read_rgb(pair.path_B)
    if im_B.size != im_A.size:
        if resize is None:  # plan_combine refused this already; the file changed since
            raise CombineError(f"{pair.path_A.name} and {pair.path_B.name} differ in size")
        im_B = im_B.resize(im_A.size, RESAMPLE[resize])
    width, height = im_A.size
    im_AB = Image.new("RGB", (2 * width, height))
    im_AB.paste(im_A, (0, 0))
    im_AB.paste(im_B, (width, 0))
    save_atomic(im_AB, pair.path_AB)


def combine_folders(fold_A: Path, fold_B: Path, fold_AB: Path, num_imgs: int | None = None,
                    use_AB: bool = False, resize: str | None = None, overwrite: bool = False,
                    workers: int | None = None, progress: bool = True) -> CombinePlan:
    """Check the whole job (raise CombineError, writing nothing, if it is refused), then write every pair.

    workers: threads that write (None: one per CPU, at most 8; 1: in this thread only).
    """
    from tqdm import tqdm

    if workers is not None and workers < 1:
        raise CombineError(f"--workers must be at least 1, not {workers}")
    plan = plan_combine(fold_A, fold_B, fold_AB, num_imgs=num_imgs, use_AB=use_AB, resize=resize,
                        overwrite=overwrite)
    for folder in sorted({pair.path_AB.parent for pair in plan.pairs}):
        folder.mkdir(parents=True, exist_ok=True)
    workers = workers or min(8, os.cpu_count() or 1)
    bar = tqdm(total=len(plan.pairs), unit="pair", desc="combine", disable=not progress or None)
    try:
        if workers == 1:
            for pair in plan.pairs:
                combine_pair(pair, resize)
                bar.update()
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                futures = [pool.submit(combine_pair, pair, resize) for pair in plan.pairs]
                try:
                    for future in futures:
                        future.result()
                        bar.update()
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise
    finally:
        bar.close()
    return plan


def _run(args: argparse.Namespace) -> int:
    try:
        plan = combine_folders(args.fold_A, args.fold_B, args.fold_AB, num_imgs=args.num_imgs,
                               use_AB=args.use_AB, resize=args.resize, overwrite=args.overwrite,
                               workers=1 if args.no_multiprocessing else args.workers)
    except CombineError as err:
        written = " Pairs written before this are complete." if Path(args.fold_AB).exists() else ""
        print(f"p2p combine: {err}{written}", file=sys.stderr)
        return 1
    except (OSError, UnidentifiedImageError) as err:
        print(f"p2p combine: stopped: {err}. Pairs written before this are complete; "
              f"run again with --overwrite to redo them.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("p2p combine: interrupted; every pair written so far is complete (no partial files)",
              file=sys.stderr)
        return 130
    for split, count in plan.splits.items():
        print(f"{split or 'pairs'}: {count} pairs -> {Path(args.fold_AB) / split}")
    if plan.ignored:
        print(f"ignored {len(plan.ignored)} files that are not "
              f"{'images named *_A.* / *_B.*' if args.use_AB else 'images'} "
              f"(first: {plan.ignored[0]})")
    return 0


def register_cli(subparsers) -> None:
    parser = subparsers.add_parser(
        "combine", help="make aligned A|B pairs from an A folder and a B folder",
        description="Write each pair of equally named images from --fold_A and --fold_B side by side "
                    "(A left, B right) into --fold_AB, per split folder (A/train + B/train -> OUT/train) "
                    "or for flat folders. The whole job is checked first: files without a partner, pairs "
                    "of different sizes and existing outputs are refused, by name, before anything is written.")
    parser.add_argument("--fold_A", required=True, help="folder of A images (or of split folders of them)")
    parser.add_argument("--fold_B", required=True, help="folder of B images, laid out like --fold_A")
    parser.add_argument("--fold_AB", required=True, help="output folder")
    parser.add_argument("--num_imgs", type=number(int, 1), default=None, help="use at most this many pairs per split")
    parser.add_argument("--use_AB", action="store_true",
                        help="pair x_A.ext with x_B.ext and write x.ext (as the official script)")
    parser.add_argument("--no_multiprocessing", action="store_true", help="write in a single thread")
    parser.add_argument("--workers", type=number(int, 1), default=None, help="writer threads (default: CPUs, at most 8)")
    parser.add_argument("--resize", nargs="?", const="bicubic", choices=sorted(RESAMPLE), default=None,
                        help="resize B to A's size when they differ (bicubic; 'nearest' keeps label colours exact)")
    parser.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    parser.set_defaults(func=_run)

"""`p2p check-data ROOT`: find every problem in a paired dataset before training (hand-written CLI).

The checks themselves live in `p2p_lib.data` (lesson 05), the same functions `PairedImageDataset`
calls: `list_split` (layout, pairing, empty files, broken links), `open_image` (a full decode: only
decoding finds truncated files), `split_pair` / `check_pair_shape` (odd widths, single images in an
aligned folder), `check_same_size` (folder layout), `convert_mode` (transparency, 16-bit ranges) and
`image_notes` (grayscale, palette, 16-bit, CMYK, alpha, EXIF rotation). This module only walks the
splits and formats the report.

Severities and the exit status:
  error    training would fail or silently learn from broken pairs: exit status 1.
  warning  it works, but perhaps not as you expect (grayscale expanded to RGB, palette images,
           mixed sizes, skipped files): exit status 0, or 1 with --strict.
  note     for your information (e.g. a missing val or test split: pix2pix training does not need
           them, and datasets like edges2shoes ship only train and val).
A missing train split is an error, unless --phase names the splits to check (then each named
split must exist).
"""
from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from p2p_lib.data import SPLIT_NAMES, check_same_size, list_split, require_folder, split_pair  # lesson 05
from p2p_lib.imagefiles import PairedDataError, convert_mode, image_notes, open_image

SHOWN_PER_GROUP = 10  # files named per error/warning group unless --all


@dataclass
class Finding:
    severity: str  # "error", "warning" or "note"
    message: str  # errors name their file in the message; warnings are grouped by message
    path: Path | None = None


@dataclass
class SplitSummary:
    phase: str
    layout: str = ""  # "aligned" or "folders"
    pairs: int = 0  # usable pairs
    sizes: Counter = field(default_factory=Counter)  # (width, height) of each A|B file (or A file) of the right shape


@dataclass
class DataReport:
    root: Path
    splits: dict[str, SplitSummary] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    def of(self, severity: str) -> list[Finding]:
        return [f for f in self.findings if f.severity == severity]

    def exit_status(self, strict: bool = False) -> int:
        """1 when training on this folder would fail or misbehave (or, if strict, anything to warn about)."""
        return int(bool(self.of("error") or (strict and self.of("warning"))))


def _phases_to_check(root: Path, phases: list[str] | None, report: DataReport) -> list[str]:
    if phases:
        return list(dict.fromkeys(phases))
    wanted = []
    for phase in SPLIT_NAMES:
        if phase == "train" or os.path.lexists(root / phase):
            wanted.append(phase)
        elif phase == "val":
            report.findings.append(Finding("note", f"no val split ({root / phase}): fine for training "
                                           "(pix2pix does not use a validation set while training)."))
        else:
            report.findings.append(Finding("note", f"no {phase} split ({root / phase}): testing will need "
                                           "another split that exists (e.g. --phase val)."))
    others = sorted(p.name for p in root.iterdir()
                    if p.is_dir() and p.name not in SPLIT_NAMES and not p.name.startswith("."))
    if others:
        report.findings.append(Finding("note", f"folders not checked (not train/val/test): {', '.join(others)}; "
                                       "check them with --phase NAME."))
    return wanted


def _check_image(path: Path, report: DataReport):
    """Decode one file and record its notes; None (and an error) if it cannot be read."""
    try:
        img = open_image(path)
    except PairedDataError as err:
        report.findings.append(Finding("error", str(err), path))
        return None
    for note in image_notes(img):
        report.findings.append(Finding("warning", note, path))
    return img


def _check_sides(sides, paths, report: DataReport) -> bool:
    for side, path in zip(sides, paths):
        try:
            convert_mode(side, 3, path)
        except PairedDataError as err:
            report.findings.append(Finding("error", str(err), path))
            return False
    return True


def check_split(root: Path, phase: str, report: DataReport, progress: bool = False) -> None:
    """Check one split: listing problems, then every pair decoded and put through the dataset's checks."""
    summary = report.splits.setdefault(phase, SplitSummary(phase))
    try:
        listing = list_split(root, phase)
    except PairedDataError as err:
        report.findings.append(Finding("error", str(err), err.path))
        return
    summary.layout = listing.layout
    report.findings += [Finding("error", str(problem), problem.path) for problem in listing.problems]
    for path in listing.skipped:
        what = "a folder" if path.is_dir() else "not a file type the dataset reads"
        report.findings.append(Finding("warning", f"skipped, {what} (images: "
                                       "jpg, jpeg, png, ppm, bmp, tif, tiff, webp)", path))
    pairs = listing.pairs
    if progress:
        from tqdm import tqdm
        pairs = tqdm(pairs, desc=f"check-data {phase}", unit="pair", leave=False)
    for a_path, b_path in pairs:
        if listing.layout == "aligned":
            img = _check_image(a_path, report)
            if img is None:
                continue
            try:
                sides = split_pair(img, a_path)
            except PairedDataError as err:
                report.findings.append(Finding("error", str(err), a_path))
                continue
            summary.sizes[img.size] += 1
            usable = _check_sides(sides, (a_path, a_path), report)
        else:
            a_img, b_img = (_check_image(p, report) for p in (a_path, b_path))
            if a_img is None or b_img is None:
                continue
            summary.sizes[a_img.size] += 1
            try:
                check_same_size(a_img, b_img, a_path, b_path)
            except PairedDataError as err:
                report.findings.append(Finding("error", str(err), a_path))
                continue
            usable = _check_sides((a_img, b_img), (a_path, b_path), report)
        summary.pairs += usable
    if len(summary.sizes) > 1:
        sizes = ", ".join(f"{w}x{h} ({n})" for (w, h), n in summary.sizes.most_common())
        report.findings.append(Finding(
            "warning", f"the {phase} split mixes image sizes: {sizes}. Fine with the default resize_and_crop "
            "(every pair is resized to load_size), but non-square sizes get squashed, and batches larger than 1 "
            "fail with preprocess crop, scale_width or none. Resize them to one size if that matters."))


def check_dataset(root, phases: list[str] | None = None, progress: bool = False) -> DataReport:
    """Check a dataset folder: every split (or just `phases`), every file fully decoded."""
    root = Path(root)
    report = DataReport(root)
    try:
        require_folder(root, "dataset root")
    except PairedDataError as err:
        report.findings.append(Finding("error", str(err), root))
        return report
    for phase in _phases_to_check(root, phases, report):
        check_split(root, phase, report, progress)
    return report


def _size_text(report: DataReport) -> str:
    sizes = Counter()
    for summary in report.splits.values():
        sizes.update(summary.sizes)
    if not sizes:
        return "no readable images"
    aligned = {s.layout for s in report.splits.values() if s.layout} == {"aligned"}
    if len(sizes) == 1:
        (width, height), = sizes
        return f"size {width}x{height}" + (f" (halves {width // 2}x{height})" if aligned else "")
    return "sizes " + ", ".join(f"{w}x{h} ({n})" for (w, h), n in sizes.most_common())


def _summary_line(report: DataReport) -> str:
    layouts = {s.layout for s in report.splits.values() if s.layout}
    layout = {frozenset({"aligned"}): "aligned A|B pairs", frozenset({"folders"}): "A/ B/ folder pairs"}.get(
        frozenset(layouts), "pairs (mixed layouts)" if layouts else "pairs")
    counts = ", ".join(f"{phase} {s.pairs}" for phase, s in report.splits.items())
    errors, warnings = len(report.of("error")), len(report.of("warning"))
    if not errors and not warnings:
        return f"OK {report.root}: {layout}, {counts}; {_size_text(report)}"
    verdict = "FAIL" if errors else "OK with warnings"
    if not report.splits:
        return f"{verdict} {report.root}: {errors} error(s), {warnings} warning(s)"
    return (f"{verdict} {report.root}: {errors} error(s), {warnings} warning(s); usable {layout}: {counts}; "
            f"{_size_text(report)}")


def format_report(report: DataReport, show_all: bool = False) -> str:
    """The report as text: errors one per line, warnings grouped, notes, then the one-line summary."""
    limit = None if show_all else SHOWN_PER_GROUP
    lines = []
    errors = report.of("error")
    for finding in errors[:limit]:
        lines.append(f"ERROR {finding.message}")
    if limit is not None and len(errors) > limit:
        lines.append(f"... and {len(errors) - limit} more errors (--all lists them)")
    groups: dict[str, list[Finding]] = {}
    for finding in report.of("warning"):
        groups.setdefault(finding.message, []).append(finding)
    for message, found in groups.items():
        named = [str(f.path) for f in found if f.path is not None]
        if not named:
            lines.append(f"WARNING {message}")
            continue
        shown = ", ".join(named[:limit])
        more = f" and {len(named) - limit} more (--all lists them)" if limit is not None and len(named) > limit else ""
        lines.append(f"WARNING {message}: {len(named)} file(s): {shown}{more}")
    lines += [f"note: {finding.message}" for finding in report.of("note")]
    lines.append(_summary_line(report))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    report = check_dataset(args.root, args.phase, progress=sys.stderr.isatty())
    print(format_report(report, show_all=args.all))
    return report.exit_status(strict=args.strict)


def register_cli(subparsers) -> None:
    parser = subparsers.add_parser(
        "check-data", help="check a paired dataset folder before training",
        description="Decode every image of a paired dataset (aligned A|B files or A/ and B/ folders) and "
                    "report every problem with its file and what to do. Exit status 1 when training on it "
                    "would fail or silently misbehave.",
        epilog="Without --phase: train (required), val and test (each optional).")
    parser.add_argument("root", type=Path, help="dataset folder, holding train/, val/, test/")
    parser.add_argument("--phase", action="append", metavar="SPLIT",
                        help="check only this split (repeat for several); each named split must exist")
    parser.add_argument("--all", action="store_true", help="name every file (default: 10 per group)")
    parser.add_argument("--strict", action="store_true", help="exit 1 on warnings too")
    parser.set_defaults(func=run)

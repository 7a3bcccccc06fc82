"""Where the course's data lives (hand-written: plumbing no lesson teaches).

Lessons, tests and the CLI all find the facades folder through `facades_dir()`:
`$P2P_DATA/facades` first, then `datasets/facades` in the working folder or one of its parents
(lessons run from `lessons/`), then `datasets/facades` beside this package's checkout.
"""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_ROOT.parent
SPLITS = ("train", "val", "test")


class DatasetNotFoundError(FileNotFoundError):
    """A dataset folder is not where the course looks for it."""


def _candidates(name: str) -> list[Path]:
    found = []
    if os.environ.get("P2P_DATA"):
        found.append(Path(os.environ["P2P_DATA"]).expanduser() / name)
    here = Path.cwd().resolve()
    found += [folder / "datasets" / name for folder in (here, *here.parents)]
    found.append(PROJECT_ROOT / "datasets" / name)
    return list(dict.fromkeys(found))


def dataset_dir(name: str) -> Path:
    """The folder of dataset `name` (one with a train/ split), or a clear error saying how to get it."""
    candidates = _candidates(name)
    for folder in candidates:
        if (folder / "train").is_dir():
            return folder
    looked = "\n  ".join(str(c) for c in candidates)
    raise DatasetNotFoundError(
        f"The {name!r} dataset was not found. Looked for a folder with a train/ split in:\n  {looked}\n"
        f"Get it with `make course` (or `p2p download {name} --dest datasets/{name}`), "
        f"or set P2P_DATA to a folder that contains {name}/train, {name}/val, {name}/test.")


def facades_dir() -> Path:
    """The facades dataset folder ($P2P_DATA/facades, then datasets/facades)."""
    return dataset_dir("facades")

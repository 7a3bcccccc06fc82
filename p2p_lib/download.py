"""Getting the datasets into place, verified (hand-written: plumbing no lesson teaches).

`p2p download facades --dest datasets/facades` prefers a local copy (`$P2P_FACADES_SRC`, or
`../shared/data/facades` beside the project) and checks every file against the manifest shipped in
`p2p_lib/manifests/facades.sha256`. With `--offline` it never touches the network: that is what
the test command and CI use. Whatever happens, the destination appears whole or not at all: files
are copied into a temporary folder beside it and renamed into place only once verified.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from p2p_lib.paths import PACKAGE_ROOT, PROJECT_ROOT

MANIFESTS = PACKAGE_ROOT / "manifests"


class DownloadError(RuntimeError):
    """A dataset could not be fetched or verified; the message says why and what to do."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(path: Path) -> dict[str, str]:
    """`sha256sum` output ('HEX  ./split/name.jpg' per line) as {'split/name.jpg': HEX}."""
    entries = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            raise DownloadError(f"{path}, line {number}: not a sha256sum line: {line!r}")
        entries[name.strip().removeprefix("./")] = digest.lower()
    return entries


def verify_tree(folder: Path, manifest: dict[str, str]) -> list[str]:
    """Every problem of `folder` against `manifest` (missing or changed files); empty when it matches."""
    problems = []
    for name, digest in sorted(manifest.items()):
        path = folder / name
        if not path.is_file():
            problems.append(f"missing: {name}")
        elif sha256_file(path) != digest:
            problems.append(f"checksum mismatch: {name}")
    return problems


def manifest_for(name: str) -> dict[str, str] | None:
    path = MANIFESTS / f"{name}.sha256"
    return read_manifest(path) if path.exists() else None


def local_source(name: str) -> Path | None:
    """A local copy to seed from: $P2P_<NAME>_SRC, else ../shared/data/<name> beside the project."""
    variable = f"P2P_{name.upper()}_SRC"
    if os.environ.get(variable):
        src = Path(os.environ[variable]).expanduser()
        if not src.is_dir():
            raise DownloadError(f"{variable} is set to {src}, which is not a folder")
        return src
    for shared in (PROJECT_ROOT.parent / "shared", Path.cwd().resolve().parent / "shared"):
        if (shared / "data" / name).is_dir():
            return shared / "data" / name
    return None


def _place(staging: Path, dest: Path) -> None:
    """Rename a finished staging folder to dest (same filesystem, so the move is atomic)."""
    os.replace(staging, dest)


def copy_verified(src: Path, dest: Path, manifest: dict[str, str]) -> None:
    """Copy the files of `manifest` from src to dest, checking each hash before and after the copy."""
    bad = verify_tree(src, manifest)
    if bad:
        raise DownloadError(f"the local copy {src} does not match the manifest ({len(bad)} problems, "
                            f"first: {bad[0]}); not using it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        for name in manifest:
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / name, staging / name)
        bad = verify_tree(staging, manifest)
        if bad:
            raise DownloadError(f"copy from {src} did not verify ({bad[0]})")
        _place(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def ensure_dataset(name: str, dest: Path, offline: bool = False) -> Path:
    """Make sure dataset `name` is complete in dest; seed it from a local copy, verified."""
    dest = Path(dest)
    manifest = manifest_for(name)
    if manifest is None:
        raise DownloadError(f"no manifest for {name!r}; known: facades")
    if dest.exists():
        bad = verify_tree(dest, manifest)
        if not bad:
            print(f"{name}: {dest} is complete ({len(manifest)} files verified)")
            return dest
        raise DownloadError(
            f"{dest} exists but does not match the {name} manifest ({len(bad)} problems, first: {bad[0]}). "
            f"Nothing was changed: move or delete that folder yourself, then run this again.")
    src = local_source(name)
    if src is not None:
        copy_verified(src, dest, manifest)
        print(f"{name}: copied {len(manifest)} verified files from {src} to {dest}")
        return dest
    if offline:
        raise DownloadError(
            f"--offline: no local copy of {name} found (set P2P_{name.upper()}_SRC to a folder holding "
            f"{name}/train, val, test, or put it at ../shared/data/{name}); not downloading.")
    raise DownloadError(f"no local copy of {name} found, and downloading is not available yet")


def _run(args: argparse.Namespace) -> int:
    try:
        ensure_dataset(args.name, Path(args.dest or Path("datasets") / args.name), offline=args.offline)
    except DownloadError as err:
        print(f"p2p download: {err}")
        return 1
    return 0


def register_cli(subparsers) -> None:
    parser = subparsers.add_parser(
        "download", help="put a pix2pix dataset in place, verified",
        description="Put a pix2pix dataset in place, verified file by file. A local copy "
                    "($P2P_<NAME>_SRC or ../shared/data/<name>) is used when present.")
    parser.add_argument("name", help="dataset name, e.g. facades")
    parser.add_argument("--dest", help="destination folder (default: datasets/NAME)")
    parser.add_argument("--offline", action="store_true", help="never use the network; fail without a local copy")
    parser.set_defaults(func=_run)

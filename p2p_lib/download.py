"""Getting the datasets into place, verified (hand-written: plumbing no lesson teaches).

`p2p download NAME --dest DIR` puts one of the official pix2pix datasets (the table `DATASETS`
below) in DIR/{train,val,...}. In this order:

1. An existing DIR that verifies is left alone; one that does not is never changed (clear error).
2. A local copy is used first when there is one ($P2P_<NAME>_SRC, or ../shared/data/<name> beside
   the project), checked before and after copying. `--url` skips this step (you asked for a mirror).
3. `--offline` stops here: it never touches the network (the tests and CI use it).
4. Otherwise the published archive (`--url` for a mirror) is streamed, with a progress bar, to a
   temporary file beside DIR, its SHA-256 computed on the way and compared with `--sha256` when
   given. Every member of the archive is inspected before anything is extracted; the archive must be
   read to its end without error (gzip CRC included) and hold the expected splits and file counts.
   facades is also checked file by file against `p2p_lib/manifests/facades.sha256`. No published
   hash exists for the other archives: the SHA-256 is printed so that you can pin it with --sha256.

Whatever happens, DIR appears whole or not at all: files go into a staging folder beside DIR that is
renamed into place only once verified; the temporary archive and the staging folder are removed on
any error, Ctrl-C included.

Extraction is done here, member by member, not by `tarfile.extractall`: only regular files and
folders whose names stay inside the archive's top folder NAME/ are accepted (no absolute paths, no
`..`, no symlinks, hardlinks, devices or fifos, no duplicate names), and each file is written with
O_EXCL into the staging folder, which holds nothing but what we wrote. Only files in the expected
split folders are extracted; anything else in NAME/ is listed and skipped. tarfile's `filter="data"`
would not be enough on its own: it has known bypasses on Python releases before 3.11.13 (CVE-2025-4517
and related), and this project supports 3.11.

Why the standard library (urllib + tarfile + hashlib) and not pooch: pooch is not a dependency, and
it would not remove the work that matters here (the per-file manifest, the split counts, the member
checks before extraction, the staging rename), which the standard library does in a few functions.
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import re
import secrets
import shutil
import signal
import socket
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from p2p_lib.optiontypes import number
from p2p_lib.paths import PACKAGE_ROOT, PROJECT_ROOT

MANIFESTS = PACKAGE_ROOT / "manifests"
BASE_URL = "http://efrosgans.eecs.berkeley.edu/pix2pix/datasets"
TIMEOUT_S = 60.0  # per socket operation (connect, each read), not for the whole download
DEADLINE_S = 1800.0  # the whole download (--timeout): a server that drips a byte at a time ends too
USER_AGENT = "p2p_lib (pix2pix course; python urllib)"


class DownloadError(RuntimeError):
    """A dataset could not be fetched or verified; the message says why and what to do."""


@dataclass(frozen=True)
class DatasetSpec:
    """What an official dataset must look like once in place."""
    name: str
    splits: dict[str, int]          # split folder -> number of files it holds
    url: str | None = None          # the published archive; its top folder is NAME/
    manifest: Path | None = None    # a sha256sum file checked file by file, where one exists


# The one table of the official pix2pix datasets. Split counts: facades from its manifest (the files
# themselves); edges2shoes (49,825 + 200 = 50,025) and night2day (17,823 + 10 + 2,287 = 20,120)
# agree with the totals of the Hugging Face copies (huggan/edges2shoes, huggan/night2day); maps
# train = 1,096 and handbags "137K" agree with the official docs/datasets.md.
DATASETS: dict[str, DatasetSpec] = {
    "facades": DatasetSpec("facades", {"train": 400, "val": 100, "test": 106},
                           f"{BASE_URL}/facades.tar.gz", MANIFESTS / "facades.sha256"),
    "maps": DatasetSpec("maps", {"train": 1096, "val": 1098}, f"{BASE_URL}/maps.tar.gz"),
    "edges2shoes": DatasetSpec("edges2shoes", {"train": 49825, "val": 200}, f"{BASE_URL}/edges2shoes.tar.gz"),
    "edges2handbags": DatasetSpec("edges2handbags", {"train": 138567, "val": 200},
                                  f"{BASE_URL}/edges2handbags.tar.gz"),
    "night2day": DatasetSpec("night2day", {"train": 17823, "val": 10, "test": 2287},
                             f"{BASE_URL}/night2day.tar.gz"),
}

CITYSCAPES_HELP = """\
cityscapes is not redistributed (its terms of use do not allow copies), so you prepare it from your own download.
  1. Register at https://www.cityscapes-dataset.com and download gtFine_trainvaltest.zip (label maps)
     and leftImg8bit_trainvaltest.zip (photos); unzip both.
  2. Pair them as the official datasets/prepare_cityscapes_dataset.py does: each colour label map
     gtFine/<split>/<city>/<id>_gtFine_color.png (B) goes with the photo
     leftImg8bit/<split>/<city>/<id>_leftImg8bit.png (A); both are resized to 256x256 and put side
     by side, A (photo) left, B (labels) right, 512x256. The official script writes Cityscapes train
     (2,975 pairs) to train/ and Cityscapes val (500 pairs) to test/.
  3. `p2p combine` does the side-by-side step: put the photos in A/<split>/<id>.png and the label maps
     in B/<split>/<id>.png (same <id>, suffixes removed, both 256x256), run
     `p2p combine --fold_A A --fold_B B --fold_AB datasets/cityscapes`, then
     `p2p check-data datasets/cityscapes`.
Cite Cordts et al., "The Cityscapes Dataset for Semantic Urban Scene Understanding", CVPR 2016."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(path: Path) -> dict[str, str]:
    """`sha256sum` output ('HEX  ./split/name.jpg' per line) as {'split/name.jpg': HEX}."""
    entries = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
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
    spec = DATASETS.get(name)
    if spec is not None and spec.manifest is not None:
        return read_manifest(spec.manifest)
    path = MANIFESTS / f"{name}.sha256"
    return read_manifest(path) if path.exists() else None


def _split_files(folder: Path, split: str) -> list[str]:
    """'split/name' of every regular file directly in folder/split (sorted)."""
    split_dir = folder / split
    if not split_dir.is_dir():
        return []
    return sorted(f"{split}/{p.name}" for p in split_dir.iterdir() if p.is_file() and not p.is_symlink())


def count_problems(counts: dict[str, int], spec: DatasetSpec) -> list[str]:
    """Differences between file counts per split and the counts `spec` expects."""
    return [f"{split}: {counts.get(split, 0)} files, expected {expected}"
            for split, expected in spec.splits.items() if counts.get(split, 0) != expected]


def verify_dataset(folder: Path, spec: DatasetSpec, exact: bool = False) -> list[str]:
    """Problems of `folder` as dataset `spec`; empty when it verifies.

    With a manifest every listed file must match its hash (and with `exact`, the split folders may
    hold nothing else); without one, each split must hold exactly the expected number of files.
    """
    folder = Path(folder)
    if spec.manifest is not None:
        manifest = read_manifest(spec.manifest)
        problems = verify_tree(folder, manifest)
        if exact:
            present = {name for split in spec.splits for name in _split_files(folder, split)}
            problems += [f"unexpected: {name}" for name in sorted(present - set(manifest))]
        return problems
    counts = {split: len(_split_files(folder, split)) for split in spec.splits}
    return count_problems(counts, spec)


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


# ----------------------------------------------------------------------------------------------
# Staging: everything is built beside the destination and renamed into place at the very end.

class Workspace:
    """Temporary files beside `dest` (same filesystem, so the final rename is atomic); all removed on exit."""

    def __init__(self, dest: Path):
        self.dest = dest
        self.created_parents: list[Path] = []
        parent = dest.parent
        while not parent.exists():
            self.created_parents.append(parent)
            parent = parent.parent
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.paths: list[Path] = []
        self.placed = False

    def path(self, kind: str, suffix: str = "") -> Path:
        path = self.dest.parent / f".{self.dest.name}.{kind}-{secrets.token_hex(4)}{suffix}"
        self.paths.append(path)
        return path

    def staging(self) -> Path:
        staging = self.path("partial")
        staging.mkdir()  # plain mkdir: the umask decides the mode, as for any folder the user makes
        return staging

    def place(self, staging: Path) -> None:
        if self.dest.is_dir() and not any(self.dest.iterdir()):
            self.dest.rmdir()  # an empty folder the user made beforehand stands for "put it here"
        if self.dest.exists():
            raise DownloadError(f"{self.dest} appeared while we were working; nothing was changed")
        os.rename(staging, self.dest)
        self.placed = True

    def __enter__(self) -> "Workspace":
        return self

    def __exit__(self, *exc) -> None:
        for path in self.paths:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            elif path.exists() or path.is_symlink():
                path.unlink()
        if not self.placed:
            for parent in self.created_parents:  # innermost first
                try:
                    parent.rmdir()
                except OSError:
                    break


def copy_verified(src: Path, dest: Path, manifest_or_spec: dict[str, str] | DatasetSpec) -> None:
    """Copy a dataset from a local folder into dest, checking it before and after the copy.

    With a manifest (a dict, or a spec that has one) the listed files are copied and checked by hash;
    without one the files of each expected split are copied and counted.
    """
    spec = manifest_or_spec if isinstance(manifest_or_spec, DatasetSpec) else None
    if spec is not None and spec.manifest is None:
        names = [name for split in spec.splits for name in _split_files(src, split)]
        check = lambda folder: verify_dataset(folder, spec)  # noqa: E731
    else:
        manifest = read_manifest(spec.manifest) if spec is not None else manifest_or_spec
        names = list(manifest)
        check = lambda folder: verify_tree(folder, manifest)  # noqa: E731
    bad = check(src)
    if bad:
        raise DownloadError(f"the local copy {src} does not verify ({len(bad)} problems, first: {bad[0]}); "
                            f"not using it. Fix or remove it (or unset the variable that points to it).")
    with Workspace(Path(dest)) as work:
        staging = work.staging()
        for name in names:
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / name, staging / name)
        bad = check(staging)
        if bad:
            raise DownloadError(f"copy from {src} did not verify ({bad[0]}); nothing was placed")
        work.place(staging)


# ----------------------------------------------------------------------------------------------
# Download

def fetch(url: str, target: Path, timeout: float = TIMEOUT_S, desc: str = "",
          deadline: float | None = DEADLINE_S) -> tuple[str, int]:
    """Stream `url` into the file `target` with a progress bar; return (sha256 hex, bytes). `timeout`: at
    most this long for each socket operation; `deadline`: at most this long for the whole download."""
    from tqdm import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    digest, received = hashlib.sha256(), 0
    give_up = None if deadline is None else time.monotonic() + deadline
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            print(f"  {total:,} bytes ({total / 2**20:,.1f} MiB)" if total is not None else "  size not announced")
            with open(target, "wb") as out, tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                                                  desc=desc or url.rsplit("/", 1)[-1], disable=None) as bar:
                while block := response.read1(1 << 20):  # read1: what has arrived, so the deadline is checked
                    if give_up is not None and time.monotonic() > give_up:
                        raise DownloadError(f"{url}: not finished within --timeout {deadline:g} s ({received:,} "
                                            f"bytes so far); nothing was placed. A slow link? Give a longer --timeout")
                    out.write(block)
                    digest.update(block)
                    received += len(block)
                    bar.update(len(block))
        if total is not None and received != total:
            raise DownloadError(f"the connection ended after {received:,} of {total:,} bytes of {url}; "
                                f"nothing was placed, try again")
    except urllib.error.HTTPError as err:
        raise DownloadError(f"{url}: HTTP {err.code} {err.reason}; nothing was placed") from None
    except urllib.error.URLError as err:
        reason = err.reason
        if isinstance(reason, (socket.timeout, TimeoutError)):
            raise DownloadError(f"{url}: no answer within {timeout:g} s (timed out); nothing was placed") from None
        if isinstance(reason, socket.gaierror):
            raise DownloadError(f"{url}: the host name could not be resolved ({reason.strerror or reason}); "
                                f"are you offline? nothing was placed") from None
        if isinstance(reason, ConnectionRefusedError):
            raise DownloadError(f"{url}: connection refused; nothing was placed") from None
        raise DownloadError(f"{url}: could not connect ({reason}); nothing was placed") from None
    except (socket.timeout, TimeoutError):
        raise DownloadError(f"{url}: no data for {timeout:g} s after {received:,} bytes (timed out); "
                            f"nothing was placed") from None
    except http.client.IncompleteRead as err:
        raise DownloadError(f"the connection ended early after {received + len(err.partial):,} bytes of {url}; "
                            f"nothing was placed, try again") from None
    except (http.client.HTTPException, ConnectionError) as err:
        raise DownloadError(f"{url}: the connection failed after {received:,} bytes "
                            f"({type(err).__name__}: {err}); nothing was placed") from None
    except ValueError as err:  # e.g. "unknown url type"
        raise DownloadError(f"{url!r} is not a URL urllib can fetch ({err})") from None
    except OSError as err:  # e.g. the disk is full, or a file:// mirror is missing
        raise DownloadError(f"{url}: {type(err).__name__}: {err}; nothing was placed") from None
    return digest.hexdigest(), received


_DRIVE = re.compile(r"^[A-Za-z]:")


def member_problem(member: tarfile.TarInfo, top: str) -> tuple[PurePosixPath | None, str | None]:
    """(path inside NAME/, None) for an acceptable member, else (None, why it is refused).

    Acceptable: a regular file or a folder whose name, relative and free of `..`, lies under `top`/.
    """
    name = member.name
    if not name or "\x00" in name or "\\" in name:
        return None, "unusual characters in the name"
    if name.startswith("/") or _DRIVE.match(name):
        return None, "absolute path"
    parts = PurePosixPath(name).parts
    if ".." in parts:
        return None, "path leaves the destination (..)"
    if member.issym():
        return None, f"symbolic link (-> {member.linkname})"
    if member.islnk():
        return None, f"hard link (-> {member.linkname})"
    if member.isdev():
        return None, "device or fifo"
    if not (member.isdir() or (member.isreg() and not member.issparse())):
        return None, f"unsupported member type {member.type!r}"
    if not parts or parts[0] != top:
        return None, f"outside the archive's top folder {top}/"
    if len(parts) == 1 and not member.isdir():
        return None, f"a file named like the top folder {top}/"
    return PurePosixPath(*parts[1:]) if len(parts) > 1 else PurePosixPath("."), None


@dataclass
class ArchivePlan:
    files: dict[str, PurePosixPath]   # member name -> path inside the dataset folder, for files to extract
    counts: dict[str, int]            # files per expected split
    skipped: list[str]                # files outside the expected splits (not extracted)


def _archive_errors():
    return (tarfile.TarError, EOFError, OSError, zlib.error)


def inspect_archive(archive: Path, spec: DatasetSpec) -> ArchivePlan:
    """Read the whole archive (every header, every byte, the gzip CRC) and decide what to extract.

    Raises DownloadError when the archive is damaged or incomplete, holds an unsafe member, a
    duplicate name, or not the expected files.
    """
    refused, files, counts, skipped = [], {}, Counter(), []
    seen: dict[PurePosixPath, bool] = {}  # path -> is a folder
    manifest = read_manifest(spec.manifest) if spec.manifest is not None else None
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                rel, problem = member_problem(member, spec.name)
                if problem:
                    refused.append(f"{member.name!r}: {problem}")
                    continue
                if rel in seen and not (seen[rel] and member.isdir()):  # a later file would replace the first
                    refused.append(f"{member.name!r}: appears twice")
                    continue
                seen[rel] = member.isdir()
                if member.isdir():
                    continue
                if len(rel.parts) == 2 and rel.parts[0] in spec.splits:
                    if manifest is not None and str(rel) not in manifest:
                        refused.append(f"{member.name!r}: not in the {spec.name} manifest")
                        continue
                    files[member.name] = rel
                    counts[rel.parts[0]] += 1
                else:
                    skipped.append(member.name)
            while tar.fileobj.read(1 << 20):  # to the end of the gzip stream: checks its CRC and length
                pass
    except _archive_errors() as err:
        raise DownloadError(f"the archive is damaged or incomplete ({type(err).__name__}: {err}); "
                            f"nothing was placed") from None
    if refused:
        raise DownloadError(f"refusing the archive: {len(refused)} unsafe or unexpected members "
                            f"(first: {refused[0]}); nothing was extracted")
    bad = count_problems(counts, spec)
    if bad:
        raise DownloadError(f"the archive does not hold the expected {spec.name} files ({'; '.join(bad)}); "
                            f"nothing was placed")
    return ArchivePlan(files, dict(counts), skipped)


def _extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    source = tar.extractfile(member)
    with os.fdopen(os.open(path, flags, 0o666), "wb") as out:
        shutil.copyfileobj(source, out, 1 << 20)
        written = out.tell()
    if written != member.size:
        raise DownloadError(f"{member.name}: wrote {written} of {member.size} bytes; nothing was placed")


def extract_archive(archive: Path, plan: ArchivePlan, staging: Path) -> None:
    """Write the planned files (and nothing else) into the empty folder `staging`."""
    root = staging.resolve()
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                rel = plan.files.get(member.name)
                if rel is None or not member.isreg():
                    continue
                path = staging.joinpath(*rel.parts)
                if not path.resolve().is_relative_to(root):  # belt and braces: names were checked already
                    raise DownloadError(f"{member.name!r} would land outside {staging}; nothing was placed")
                _extract_member(tar, member, path)
    except _archive_errors() as err:
        raise DownloadError(f"extracting failed ({type(err).__name__}: {err}); nothing was placed") from None


def download_dataset(spec: DatasetSpec, dest: Path, url: str | None = None, sha256: str | None = None,
                     timeout: float = TIMEOUT_S, deadline: float | None = DEADLINE_S) -> Path:
    """Download `spec`'s archive (or `url`), check it, and place its splits at dest (dest must not exist)."""
    dest = Path(dest)
    url = url or spec.url
    if url is None:
        raise DownloadError(f"no published archive for {spec.name}")
    with Workspace(dest) as work:
        archive = work.path("download", ".tar.gz")
        print(f"{spec.name}: downloading {url}")
        digest, size = fetch(url, archive, timeout=timeout, desc=f"{spec.name}.tar.gz", deadline=deadline)
        if sha256 is not None and digest != sha256.lower():
            raise DownloadError(f"{url}: SHA-256 {digest} does not match the expected {sha256.lower()}; "
                                f"nothing was placed")
        plan = inspect_archive(archive, spec)
        staging = work.staging()
        extract_archive(archive, plan, staging)
        bad = verify_dataset(staging, spec, exact=True)
        if bad:
            raise DownloadError(f"the extracted {spec.name} does not verify ({len(bad)} problems, first: {bad[0]}); "
                                f"nothing was placed")
        work.place(staging)
    counts = ", ".join(f"{split} {n}" for split, n in plan.counts.items())
    checked = "every file checked against the manifest" if spec.manifest is not None else "split counts checked"
    print(f"{spec.name}: {dest} is ready ({counts}; {checked})")
    if plan.skipped:
        print(f"{spec.name}: skipped {len(plan.skipped)} archive files outside the splits "
              f"(first: {plan.skipped[0]})")
    print(f"{spec.name}: archive SHA-256 {digest} ({size:,} bytes); pin it with --sha256 {digest}")
    return dest


def ensure_dataset(name: str, dest: Path, offline: bool = False, url: str | None = None,
                   sha256: str | None = None, spec: DatasetSpec | None = None,
                   timeout: float = TIMEOUT_S, deadline: float | None = DEADLINE_S) -> Path:
    """Make sure dataset `name` is complete in dest: keep a verified one, else copy or download it."""
    dest = Path(dest)
    if spec is None:
        if name == "cityscapes":
            raise DownloadError(CITYSCAPES_HELP)
        if name not in DATASETS:
            raise DownloadError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)} "
                                f"(and cityscapes, which you prepare yourself: p2p download cityscapes)")
        spec = DATASETS[name]
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise DownloadError(f"--sha256 wants 64 hexadecimal digits, got {sha256!r}")
    if dest.exists() and not dest.is_dir():
        raise DownloadError(f"{dest} exists and is not a folder; nothing was changed")
    if dest.is_dir() and any(dest.iterdir()):
        bad = verify_dataset(dest, spec)
        if not bad:
            how = "files verified" if spec.manifest is not None else "files counted"
            print(f"{spec.name}: {dest} is complete ({sum(spec.splits.values())} {how})")
            return dest
        raise DownloadError(
            f"{dest} exists but does not verify as {spec.name} ({len(bad)} problems, first: {bad[0]}). "
            f"Nothing was changed: move or delete that folder yourself, then run this again.")
    src = None if url else local_source(spec.name)
    if src is not None:
        copy_verified(src, dest, spec)
        if sha256:
            print(f"{spec.name}: --sha256 concerns the archive; the local copy was verified instead")
        print(f"{spec.name}: copied {sum(spec.splits.values())} verified files from {src} to {dest}")
        return dest
    if offline:
        raise DownloadError(
            f"--offline: no local copy of {spec.name} found (set P2P_{spec.name.upper()}_SRC to a folder "
            f"holding {spec.name}/{', '.join(spec.splits)}, or put it at ../shared/data/{spec.name}); "
            f"not downloading.")
    return download_dataset(spec, dest, url=url, sha256=sha256, timeout=timeout, deadline=deadline)


class Terminated(BaseException):
    "SIGTERM, raised where the process is, so that the temporary files are removed on the way out."


def raise_terminated(signum, frame):
    raise Terminated()


def run_download(action: Callable[[], object], prefix: str) -> int:
    """Run a download as a command does: SIGTERM and Ctrl-C end it with its temporary files removed; every
    failure is one line on stderr starting with `prefix`. Returns the exit status (0, 1, 130 or 143)."""
    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        action()
    except Terminated:
        print(f"{prefix}: terminated (SIGTERM); nothing was placed and the temporary files were removed",
              file=sys.stderr)
        return 143
    except DownloadError as err:
        print(f"{prefix}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted; nothing was placed and the temporary files were removed", file=sys.stderr)
        return 130
    except OSError as err:  # e.g. no permission to create the destination's folder, or a full disk
        print(f"{prefix}: {err}; nothing was placed", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def _run(args: argparse.Namespace) -> int:
    return run_download(lambda: ensure_dataset(args.name, Path(args.dest or Path("datasets") / args.name),
                                               offline=args.offline, url=args.url, sha256=args.sha256,
                                               deadline=args.timeout), "p2p download")


def register_cli(subparsers) -> None:
    names = ", ".join([*DATASETS, "cityscapes"])
    parser = subparsers.add_parser(
        "download", help="put an official pix2pix dataset in place, verified",
        description=f"Put an official pix2pix dataset ({', '.join(DATASETS)}) in DEST/{{train,val,test}}, "
                    "verified (`p2p download cityscapes` explains how to prepare that one yourself). "
                    "A local copy ($P2P_<NAME>_SRC or ../shared/data/<name>) is used first when present; "
                    "otherwise the published archive is downloaded, checked and extracted safely.")
    parser.add_argument("name", help=f"dataset name: {names}")
    parser.add_argument("--dest", help="destination folder (default: datasets/NAME)")
    parser.add_argument("--url", help="download the archive from this mirror instead (skips the local copy)")
    parser.add_argument("--sha256", help="expected SHA-256 of the archive; a mismatch places nothing")
    parser.add_argument("--offline", action="store_true", help="never use the network; fail without a local copy")
    parser.add_argument("--timeout", type=number(float, above=0), default=DEADLINE_S,
                        help="give up a download that has not finished after this many seconds (default: %(default)g; "
                             f"a connection that sends nothing for {TIMEOUT_S:g} s is given up sooner)")
    parser.set_defaults(func=_run)

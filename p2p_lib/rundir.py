"""A `p2p train` run folder that no second process can write into, and disk space checked before it is
needed (hand-written plumbing: no lesson teaches file locks).

    with RunFolderLock(run_dir, command="p2p train --name x"):   # RunFolderError if another run holds it
        removed = remove_leftover_temporaries(run_dir)          # what a killed save left behind
        check_free_space(run_dir, checkpoint_bytes(G, D))       # DiskSpaceError before the first step

The lock is `fcntl.flock` on RUN_DIR/.lock: the kernel releases it when the process ends, however it
ends (SIGKILL included), so a stale lock never blocks a later run. The file holds who has it (pid, host,
start time, command) for the message a second run gets. Without fcntl (Windows) there is no lock.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import time
from pathlib import Path

from torch import nn

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

__all__ = ["LOCK_NAME", "RunFolderError", "DiskSpaceError", "RunFolderLock", "remove_leftover_temporaries",
           "checkpoint_bytes", "check_free_space", "describe_write_error", "megabytes", "make_folder"]

LOCK_NAME = ".lock"
DISK_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


class RunFolderError(Exception):
    """The run folder cannot be used (another run holds it, or it cannot be written)."""


class DiskSpaceError(RunFolderError):
    """Not enough free space for the checkpoints."""


def megabytes(count: int) -> str:
    return f"{count / 1e6:,.0f} MB" if count >= 1e6 else f"{count / 1e6:.2f} MB"


class RunFolderLock:
    "An exclusive lock on a run folder for the life of a `with` block (the folder is made if missing)."

    def __init__(self, run_dir: str | os.PathLike, command: str = ""):
        self.run_dir, self.command, self.fd = Path(run_dir), command, None
        self.path = self.run_dir / LOCK_NAME

    def __enter__(self) -> "RunFolderLock":
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise RunFolderError(f"cannot use the run folder {self.run_dir}: {describe_write_error(err, _existing(self.run_dir))}") from None
        if fcntl is None:
            return self
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = self._holder()
            os.close(self.fd)
            self.fd = None
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunFolderError(f"another p2p train is writing to {self.run_dir} ({holder}). Wait for it to "
                                     "end or stop it (Ctrl-C saves it), or train under another --name") from None
            raise RunFolderError(f"cannot lock {self.path}: {describe_write_error(err)}") from None
        who = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
               "command": self.command}
        os.ftruncate(self.fd, 0)
        os.write(self.fd, (json.dumps(who) + "\n").encode())
        return self

    def _holder(self) -> str:
        "Who holds the lock, from the lock file (written by the holder just after it took the lock)."
        try:
            who = json.loads(self.path.read_text(encoding="utf-8"))
            return (f"pid {who['pid']} on {who['host']}, started {who['started']}"
                    + (f": {who['command']}" if who.get("command") else ""))
        except (OSError, ValueError, KeyError, TypeError):
            return f"a process holds {self.path}"

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing releases the flock
            self.fd = None


def remove_leftover_temporaries(run_dir: str | os.PathLike) -> list[str]:
    """Delete the temporary files a save killed half-way left in `run_dir` (write_atomically names them
    .NAME.XXXX.tmp); call it holding the lock, so that no running save's file is taken. Returns their names."""
    removed = []
    for path in sorted(Path(run_dir).glob(".*.tmp")):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed


def _state_bytes(net: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in net.state_dict().values())


def checkpoint_bytes(G: nn.Module, D: nn.Module) -> int:
    """About what one save writes: the training state (G and D with both Adam moments of every parameter)
    plus the generator file. Atomic saves write the new files beside the old ones, so this much must be free."""
    moments = 2 * sum(p.numel() * p.element_size() for net in (G, D) for p in net.parameters())
    return _state_bytes(G) + _state_bytes(D) + moments + _state_bytes(G)


def check_free_space(run_dir: str | os.PathLike, needed: int) -> int:
    "Raise DiskSpaceError unless `needed` bytes (and 5% more) are free where `run_dir` is; returns the free bytes."
    free = shutil.disk_usage(run_dir).free
    if free < needed * 1.05:
        raise DiskSpaceError(f"the disk is too full for checkpoints: {megabytes(free)} free in {run_dir}, and one "
                             f"save needs about {megabytes(needed)} (the training state and the generator). Free "
                             "some space, or give --checkpoints_dir on another disk")
    return free


def describe_write_error(err: OSError, where: str | os.PathLike | None = None) -> str:
    "One line for an OSError of the write path: a full disk, a read-only or unwritable folder, or the reason."
    if err.errno in DISK_FULL_ERRNOS:
        free = ""
        if where is not None:
            try:
                free = f" ({megabytes(shutil.disk_usage(where).free)} free in {where})"
            except OSError:
                pass
        return f"the disk is full{free}"
    if err.errno == errno.EROFS:
        return "the file system is read-only"
    if err.errno in (errno.EACCES, errno.EPERM):
        return "permission denied (the folder is not writable by this user)"
    if err.errno in (errno.ENOTDIR, errno.EEXIST) and err.filename:
        blocking = next((p for p in (Path(err.filename), *Path(err.filename).parents) if p.exists() and not p.is_dir()),
                        Path(err.filename))
        return f"{blocking} is a file, where a folder should be"
    return err.strerror or str(err)


def make_folder(path: str | os.PathLike, what: str = "output folder") -> Path:
    "mkdir -p, with one clear line (RunFolderError) if it cannot be made: a file in the way, read-only, ..."
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunFolderError(f"cannot make the {what} {path}: {describe_write_error(err, _existing(path))}") from None
    return path


def _existing(path: Path) -> Path:
    "The nearest folder of `path` that exists (for the free space there)."
    return next((p for p in (path, *path.parents) if p.is_dir()), Path("."))

"""p2p download: local seeding, and downloading from an http.server on 127.0.0.1 started here.

Nothing leaves this machine: the archives are tiny synthetic datasets built in tmp_path, served by
a thread that is stopped at the end of each test. Every failure case checks that nothing appeared
at the destination, that no temporary file remains, and that nothing was written anywhere else.
"""
from __future__ import annotations

import hashlib
import io
import socket
import tarfile
import time
import urllib.error
from functools import partial
from http.server import SimpleHTTPRequestHandler
from pathlib import Path

import pytest
from loopback import serving  # tests/loopback.py

from p2p_lib import cli, download
from p2p_lib.download import DatasetSpec, DownloadError, ensure_dataset

NAME = "toyfacades"  # no local copy of this name exists anywhere (../shared/data has none)
SPLITS = {"train": 3, "val": 2, "test": 1}


# ---------------------------------------------------------------------------------------------
# Building tiny datasets, manifests and archives

def make_dataset(root: Path, splits: dict[str, int] = SPLITS) -> Path:
    for split, count in splits.items():
        (root / split).mkdir(parents=True)
        for i in range(1, count + 1):
            (root / split / f"{i}.jpg").write_bytes(f"{split}-{i}-".encode() * 40)
    return root


def write_manifest(folder: Path, path: Path) -> Path:
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  ./{p.relative_to(folder).as_posix()}"
             for p in sorted(folder.rglob("*")) if p.is_file()]
    path.write_text("\n".join(lines) + "\n")
    return path


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def make_archive(path: Path, folder: Path, top: str = NAME, extra=()) -> Path:
    """folder's files as top/<split>/<file>, then the extra TarInfo members (name, TarInfo or bytes)."""
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname=top)
        for item in extra:
            if isinstance(item, tarfile.TarInfo):
                tar.addfile(item)
            else:
                add_bytes(tar, *item)
    return path


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under root (folders as None) with its content: a snapshot to compare."""
    return {p.relative_to(root).as_posix(): (None if p.is_dir() else p.read_bytes())
            for p in sorted(root.rglob("*"))}


# ---------------------------------------------------------------------------------------------
# The local server

class _Handler(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        self.server.requests.append(self.path)
        if self.path == "/drip.tar.gz":  # answers at once, then sends 10 bytes every 50 ms (never stalls)
            data = (Path(self.directory) / "good.tar.gz").read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                for start in range(0, min(len(data), 6000), 10):  # at most 30 s
                    self.wfile.write(data[start:start + 10])
                    self.wfile.flush()
                    time.sleep(0.05)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up
                pass
            self.close_connection = True
            return
        if self.path == "/short.tar.gz":  # announces more bytes than it sends, then hangs up
            data = (Path(self.directory) / "good.tar.gz").read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "srv"
    root.mkdir()
    with serving(partial(_Handler, directory=str(root))) as httpd:
        httpd.root = root
        yield httpd


@pytest.fixture
def setup(tmp_path, server, monkeypatch):
    """A toy facades-like dataset, its manifest, a good archive on the server and a spec pointing at it."""
    monkeypatch.delenv(f"P2P_{NAME.upper()}_SRC", raising=False)
    source = make_dataset(tmp_path / "made" / NAME)
    manifest = write_manifest(source, tmp_path / "made" / f"{NAME}.sha256")
    make_archive(server.root / "good.tar.gz", source)
    spec = DatasetSpec(NAME, dict(SPLITS), url=f"{server.url}/good.tar.gz", manifest=manifest)
    work = tmp_path / "work"
    work.mkdir()
    return {"source": source, "spec": spec, "work": work, "dest": work / NAME, "server": server,
            "tmp": tmp_path}


def assert_untouched(setup, before):
    """Nothing at the destination, no temporary file beside it, nothing new anywhere under tmp_path."""
    assert not setup["dest"].exists()
    assert list(setup["work"].iterdir()) == []
    assert tree(setup["tmp"]) == before


# ---------------------------------------------------------------------------------------------
# The table of official datasets

def test_official_table_matches_the_facades_manifest():
    facades = download.DATASETS["facades"]
    manifest = download.read_manifest(facades.manifest)
    per_split = {split: sum(name.startswith(f"{split}/") for name in manifest) for split in facades.splits}
    assert per_split == facades.splits == {"train": 400, "val": 100, "test": 106}
    expected = {  # written out, not rebuilt from the pattern the table is made with
        "facades": ("http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/facades.tar.gz",
                    {"train": 400, "val": 100, "test": 106}),
        "maps": ("http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/maps.tar.gz", {"train": 1096, "val": 1098}),
        "edges2shoes": ("http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/edges2shoes.tar.gz",
                        {"train": 49825, "val": 200}),
        "edges2handbags": ("http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/edges2handbags.tar.gz",
                           {"train": 138567, "val": 200}),
        "night2day": ("http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/night2day.tar.gz",
                      {"train": 17823, "val": 10, "test": 2287}),
    }
    assert {name: (spec.url, spec.splits) for name, spec in download.DATASETS.items()} == expected
    assert all(spec.name == name for name, spec in download.DATASETS.items())  # the archive's top folder is NAME/
    assert [name for name, spec in download.DATASETS.items() if spec.manifest] == ["facades"]
    assert "cityscapes" not in download.DATASETS


def test_cityscapes_explains_how_to_prepare_it(tmp_path, capsys):
    assert cli.main(["download", "cityscapes", "--dest", str(tmp_path / "cityscapes")]) == 1
    err = capsys.readouterr().err
    for needed in ("gtFine", "leftImg8bit", "prepare_cityscapes_dataset.py", "p2p combine", "cityscapes-dataset.com"):
        assert needed in err
    assert list(tmp_path.iterdir()) == []


def test_unknown_name_lists_the_known_ones(tmp_path):
    with pytest.raises(DownloadError, match="edges2handbags"):
        ensure_dataset("no_such_set", tmp_path / "x", offline=True)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Local copies and existing destinations

def test_local_copy_is_verified_and_copied(setup, monkeypatch):
    monkeypatch.setenv(f"P2P_{NAME.upper()}_SRC", str(setup["source"]))
    ensure_dataset(NAME, setup["dest"], offline=True, spec=setup["spec"])
    assert tree(setup["dest"]) == tree(setup["source"])
    assert sorted(p.name for p in setup["work"].iterdir()) == [NAME]  # no staging folder left
    assert setup["server"].requests == []


def test_corrupt_local_copy_is_refused_without_network(setup, monkeypatch):
    (setup["source"] / "val" / "2.jpg").write_bytes(b"changed")
    monkeypatch.setenv(f"P2P_{NAME.upper()}_SRC", str(setup["source"]))
    before = tree(setup["tmp"])
    with pytest.raises(DownloadError, match=r"does not verify.*val/2\.jpg"):
        ensure_dataset(NAME, setup["dest"], spec=setup["spec"])  # not offline: still no download
    assert_untouched(setup, before)
    assert setup["server"].requests == []


def test_local_copy_without_manifest_is_counted(tmp_path, monkeypatch):
    spec = DatasetSpec("toymaps", {"train": 3, "val": 2})
    src = make_dataset(tmp_path / "src", spec.splits)
    monkeypatch.setenv("P2P_TOYMAPS_SRC", str(src))
    ensure_dataset("toymaps", tmp_path / "out" / "toymaps", offline=True, spec=spec)
    assert tree(tmp_path / "out" / "toymaps") == tree(src)
    (src / "train" / "1.jpg").unlink()
    with pytest.raises(DownloadError, match="train: 2 files, expected 3"):
        ensure_dataset("toymaps", tmp_path / "out2", offline=True, spec=spec)
    assert not (tmp_path / "out2").exists()


def test_existing_good_destination_is_left_alone(setup, server):
    folder = make_dataset(setup["dest"])
    stamp = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    ensure_dataset(NAME, setup["dest"], spec=setup["spec"], url=f"{server.url}/good.tar.gz")
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == stamp
    assert server.requests == []


def test_existing_bad_destination_is_never_changed(setup, server):
    make_dataset(setup["dest"])
    (setup["dest"] / "train" / "3.jpg").unlink()
    (setup["dest"] / "mine.txt").write_text("my notes")
    before = tree(setup["tmp"])
    with pytest.raises(DownloadError, match=r"exists but does not verify.*missing: train/3\.jpg.*Nothing was changed"):
        ensure_dataset(NAME, setup["dest"], spec=setup["spec"])
    assert tree(setup["tmp"]) == before
    assert server.requests == []


def test_offline_without_local_copy_fails_without_network(setup, capsys, monkeypatch):
    monkeypatch.setitem(download.DATASETS, NAME, setup["spec"])
    before = tree(setup["tmp"])
    assert cli.main(["download", NAME, "--dest", str(setup["dest"]), "--offline"]) == 1
    err = capsys.readouterr().err
    assert "--offline" in err and f"P2P_{NAME.upper()}_SRC" in err and "Traceback" not in err
    assert_untouched(setup, before)
    assert setup["server"].requests == []


# ---------------------------------------------------------------------------------------------
# Downloads that succeed

def test_good_archive_is_downloaded_verified_and_placed(setup, capsys):
    archive = setup["server"].root / "good.tar.gz"
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    ensure_dataset(NAME, setup["dest"], spec=setup["spec"], sha256=digest.upper())
    assert tree(setup["dest"]) == tree(setup["source"])
    assert sorted(p.name for p in setup["work"].iterdir()) == [NAME]
    out = capsys.readouterr().out
    assert f"--sha256 {digest}" in out  # printed so it can be pinned
    assert setup["server"].requests == ["/good.tar.gz"]
    # a second run finds it complete and does not download again
    ensure_dataset(NAME, setup["dest"], spec=setup["spec"])
    assert setup["server"].requests == ["/good.tar.gz"]


def test_cli_download_through_a_mirror_url_and_into_new_folders(setup, capsys, monkeypatch):
    monkeypatch.setitem(download.DATASETS, NAME, DatasetSpec(NAME, dict(SPLITS), url="http://127.0.0.1:9/unused",
                                                             manifest=setup["spec"].manifest))
    dest = setup["work"] / "a" / "b" / NAME
    url = f"{setup['server'].url}/good.tar.gz"
    assert cli.main(["download", NAME, "--dest", str(dest), "--url", url]) == 0
    assert tree(dest) == tree(setup["source"])
    assert setup["server"].requests == ["/good.tar.gz"]


def test_archive_without_manifest_is_checked_by_counts(tmp_path, server):
    spec = DatasetSpec("toymaps", {"train": 3, "val": 2}, url=f"{server.url}/toymaps.tar.gz")
    src = make_dataset(tmp_path / "made" / "toymaps", spec.splits)
    make_archive(server.root / "toymaps.tar.gz", src, top="toymaps", extra=[("toymaps/README.txt", b"hello")])
    dest = tmp_path / "out" / "toymaps"
    ensure_dataset("toymaps", dest, spec=spec)
    assert tree(dest) == tree(src)  # README.txt lies outside the splits: skipped, not extracted
    # one file short: refused
    (src / "val" / "2.jpg").unlink()
    make_archive(server.root / "toymaps.tar.gz", src, top="toymaps")
    with pytest.raises(DownloadError, match="val: 1 files, expected 2"):
        ensure_dataset("toymaps", tmp_path / "out2" / "toymaps", spec=spec)
    assert not (tmp_path / "out2").exists()


def test_an_empty_destination_folder_is_filled(setup):
    setup["dest"].mkdir()
    ensure_dataset(NAME, setup["dest"], spec=setup["spec"])
    assert tree(setup["dest"]) == tree(setup["source"])


# ---------------------------------------------------------------------------------------------
# Downloads that must leave nothing behind

def test_truncated_archive(setup):
    good = (setup["server"].root / "good.tar.gz").read_bytes()
    (setup["server"].root / "cut.tar.gz").write_bytes(good[: len(good) // 2])
    before = tree(setup["tmp"])
    with pytest.raises(DownloadError, match="damaged or incomplete"):
        ensure_dataset(NAME, setup["dest"], spec=setup["spec"], url=f"{setup['server'].url}/cut.tar.gz")
    assert_untouched(setup, before)


def test_gzip_trailer_missing(setup):
    good = (setup["server"].root / "good.tar.gz").read_bytes()
    (setup["server"].root / "cut.tar.gz").write_bytes(good[:-4])  # the tar is whole, the gzip length field is not
    before = tree(setup["tmp"])
    with pytest.raises(DownloadError, match="damaged or incomplete"):
        ensure_dataset(NAME, setup["dest"], spec=setup["spec"], url=f"{setup['server'].url}/cut.tar.gz")
    assert_untouched(setup, before)


def test_connection_that_ends_early(setup):
    before = tree(setup["tmp"])
    with pytest.raises(DownloadError, match="connection ended"):
        ensure_dataset(NAME, setup["dest"], spec=setup["spec"], url=f"{setup['server'].url}/short.tar.gz")
    assert_untouched(setup, before)


def test_wrong_checksum_places_nothing(setup, capsys, monkeypatch):
    monkeypatch.setitem(download.DATASETS, NAME, setup["spec"])
    before = tree(setup["tmp"])
    assert cli.main(["download", NAME, "--dest", str(setup["dest"]), "--sha256", "0" * 64]) == 1
    err = capsys.readouterr().err
    assert "does not match the expected " + "0" * 64 in err and "Traceback" not in err
    assert_untouched(setup, before)


def test_malformed_sha256_is_refused_before_downloading(setup):
    with pytest.raises(DownloadError, match="64 hexadecimal"):
        ensure_dataset(NAME, setup["dest"], spec=setup["spec"], sha256="abc")
    assert setup["server"].requests == []


def test_file_changed_inside_the_archive_fails_the_manifest(setup):
    changed = setup["tmp"] / "changed" / NAME
    make_dataset(changed)
    (changed / "test" / "1.jpg").write_bytes(b"not the original bytes")
    make_archive(setup["server"].root / "changed.tar.gz", changed)
    before = tree(setup["tmp"])
    with pytest.raises(DownloadError, match=r"does not verify.*test/1\.jpg"):
        ensure_dataset(NAME, setup["dest"], spec=setup["spec"], url=f"{setup['server'].url}/changed.tar.gz")
    assert_untouched(setup, before)


def _info(name, kind, linkname=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def _unsafe_members(tmp_path):
    absolute = (tmp_path / "abs_evil").as_posix()
    return {
        "dotdot": ("../evil", b"x"),
        "dotdot-inside": (f"{NAME}/train/../../evil", b"x"),
        "absolute": (absolute, b"x"),
        "symlink": _info(f"{NAME}/train/link.jpg", tarfile.SYMTYPE, "/etc/passwd"),
        "symlink-dir": _info(f"{NAME}/val2", tarfile.SYMTYPE, "../.."),
        "hardlink": _info(f"{NAME}/train/hard.jpg", tarfile.LNKTYPE, f"{NAME}/train/1.jpg"),
        "fifo": _info(f"{NAME}/train/pipe", tarfile.FIFOTYPE),
        "device": _info(f"{NAME}/train/dev", tarfile.CHRTYPE),
        "outside-top": ("elsewhere/1.jpg", b"x"),
        "duplicate": (f"./{NAME}/train/1.jpg", b"replaced"),
        "not-in-manifest": (f"{NAME}/train/4.jpg", b"x"),
    }


@pytest.mark.parametrize("case", list(_unsafe_members(Path("/x"))))
def test_unsafe_archive_is_refused(setup, case):
    member = _unsafe_members(setup["tmp"])[case]
    make_archive(setup["server"].root / "evil.tar.gz", setup["source"], extra=[member])
    before = tree(setup["tmp"])
    with pytest.raises(DownloadError, match="refusing the archive"):
        ensure_dataset(NAME, setup["dest"], spec=setup["spec"], url=f"{setup['server'].url}/evil.tar.gz")
    assert_untouched(setup, before)
    assert not (setup["tmp"] / "abs_evil").exists() and not (setup["tmp"] / "evil").exists()


def test_http_404_is_one_clear_line(setup, capsys, monkeypatch):
    monkeypatch.setitem(download.DATASETS, NAME, setup["spec"])
    before = tree(setup["tmp"])
    url = f"{setup['server'].url}/missing.tar.gz"
    assert cli.main(["download", NAME, "--dest", str(setup["dest"]), "--url", url]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "HTTP 404" in err and url in err and "Traceback" not in err
    assert_untouched(setup, before)


def test_connection_refused(setup):
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    before = tree(setup["tmp"])
    with pytest.raises(DownloadError, match="connection refused"):
        ensure_dataset(NAME, setup["dest"], spec=setup["spec"], url=f"http://127.0.0.1:{port}/x.tar.gz")
    assert_untouched(setup, before)


def test_server_that_never_answers_times_out(setup):
    with socket.socket() as sock:  # listens (the kernel accepts the connection) but never replies
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/x.tar.gz"
        before = tree(setup["tmp"])
        with pytest.raises(DownloadError, match="timed out"):
            ensure_dataset(NAME, setup["dest"], spec=setup["spec"], url=url, timeout=0.3)
    assert_untouched(setup, before)


def test_name_resolution_failure_is_explained(setup, monkeypatch):
    def no_dns(*args, **kwargs):
        raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))
    monkeypatch.setattr(download.urllib.request, "urlopen", no_dns)
    before = tree(setup["tmp"])
    with pytest.raises(DownloadError, match="could not be resolved.*offline"):
        ensure_dataset(NAME, setup["dest"], spec=setup["spec"])
    assert_untouched(setup, before)


def test_interrupt_during_extraction_cleans_up(setup, monkeypatch):
    real, calls = download._extract_member, []

    def interrupted(*args):
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args)
    monkeypatch.setattr(download, "_extract_member", interrupted)
    before = tree(setup["tmp"])
    with pytest.raises(KeyboardInterrupt):
        ensure_dataset(NAME, setup["dest"], spec=setup["spec"])
    assert len(calls) == 3  # it was interrupted half way, with files already in the staging folder
    assert_untouched(setup, before)


def test_interrupt_after_download_cleans_up_and_exits_130(setup, capsys, monkeypatch):
    seen = []

    def interrupted(archive, spec):
        seen.append(archive.exists())
        raise KeyboardInterrupt
    monkeypatch.setattr(download, "inspect_archive", interrupted)
    monkeypatch.setitem(download.DATASETS, NAME, setup["spec"])
    before = tree(setup["tmp"])
    assert cli.main(["download", NAME, "--dest", str(setup["dest"])]) == 130
    assert seen == [True]  # the temporary archive existed when the interrupt came
    assert "interrupted" in capsys.readouterr().err
    assert_untouched(setup, before)


def test_failed_download_removes_the_parent_folders_it_made(setup):
    dest = setup["work"] / "new" / "deeper" / NAME
    with pytest.raises(DownloadError, match="HTTP 404"):
        ensure_dataset(NAME, dest, spec=setup["spec"], url=f"{setup['server'].url}/missing.tar.gz")
    assert list(setup["work"].iterdir()) == []


@pytest.mark.parametrize("name, kind, reason", [
    ("../evil", tarfile.REGTYPE, "leaves the destination"),
    (f"{NAME}/a/../../evil", tarfile.REGTYPE, "leaves the destination"),
    ("/tmp/evil", tarfile.REGTYPE, "absolute path"),
    ("C:/evil", tarfile.REGTYPE, "absolute path"),
    (f"{NAME}\\..\\evil", tarfile.REGTYPE, "unusual characters"),
    (f"{NAME}/train/l.jpg", tarfile.SYMTYPE, "symbolic link"),
    (f"{NAME}/train/h.jpg", tarfile.LNKTYPE, "hard link"),
    (f"{NAME}/train/p", tarfile.FIFOTYPE, "device or fifo"),
    (f"{NAME}/train/b", tarfile.BLKTYPE, "device or fifo"),
    ("other/train/1.jpg", tarfile.REGTYPE, "outside the archive's top folder"),
])
def test_member_checks_name_each_reason(name, kind, reason):
    rel, problem = download.member_problem(_info(name, kind, "target"), NAME)
    assert rel is None and reason in problem


def test_member_checks_accept_files_and_folders_inside_the_top_folder():
    assert download.member_problem(_info(f"./{NAME}/train/1.jpg", tarfile.REGTYPE), NAME) == \
        (download.PurePosixPath("train/1.jpg"), None)
    assert download.member_problem(_info(f"{NAME}/val", tarfile.DIRTYPE), NAME) == \
        (download.PurePosixPath("val"), None)


def test_a_server_that_drips_is_given_up_at_the_overall_deadline(setup):
    before = tree(setup["tmp"])
    started = time.monotonic()
    with pytest.raises(DownloadError, match=r"not finished within --timeout 1 s \([\d,]+ bytes so far\)"):
        ensure_dataset(NAME, setup["dest"], spec=setup["spec"], url=f"{setup['server'].url}/drip.tar.gz",
                       timeout=5, deadline=1)
    assert time.monotonic() - started < 20  # each read gets data within 5 s: only the deadline can stop it
    assert_untouched(setup, before)


SIGTERM_CHILD = """
import sys
from p2p_lib import cli, download
from p2p_lib.download import DatasetSpec
name, url, manifest, dest = sys.argv[1:]
download.DATASETS[name] = DatasetSpec(name, {"train": 3, "val": 2, "test": 1}, url=url, manifest=manifest)
sys.exit(cli.main(["download", name, "--dest", dest, "--url", url]))
"""


def test_sigterm_during_a_download_removes_the_partial_file_and_exits_143(setup):
    import os
    import signal
    import subprocess
    import sys
    manifest = str(setup["spec"].manifest)
    child = subprocess.Popen([sys.executable, "-c", SIGTERM_CHILD, NAME, f"{setup['server'].url}/drip.tar.gz",
                              manifest, str(setup["dest"])], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(600):  # the hidden partial archive appears beside the destination
            if any(p.name.startswith(f".{NAME}.download-") for p in setup["work"].iterdir()):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the download never started")
        time.sleep(0.3)
        child.send_signal(signal.SIGTERM)
        out, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 143, err
    assert "terminated (SIGTERM); nothing was placed and the temporary files were removed" in err
    assert list(setup["work"].iterdir()) == [] and not setup["dest"].exists()

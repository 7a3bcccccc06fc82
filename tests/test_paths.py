import pytest

from p2p_lib import DatasetNotFoundError, facades_dir
from p2p_lib.paths import dataset_dir


def test_p2p_data_comes_first(tmp_path, monkeypatch):
    (tmp_path / "facades" / "train").mkdir(parents=True)
    monkeypatch.setenv("P2P_DATA", str(tmp_path))
    assert facades_dir() == tmp_path / "facades"


def test_datasets_folder_found_from_a_subfolder(tmp_path, monkeypatch):
    monkeypatch.delenv("P2P_DATA", raising=False)
    (tmp_path / "datasets" / "toy" / "train").mkdir(parents=True)
    (tmp_path / "lessons").mkdir()
    monkeypatch.chdir(tmp_path / "lessons")
    assert dataset_dir("toy") == (tmp_path / "datasets" / "toy").resolve()


def test_missing_dataset_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("P2P_DATA", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetNotFoundError) as info:
        dataset_dir("no_such_set")
    message = str(info.value)
    assert str(tmp_path / "no_such_set") in message
    assert "p2p download no_such_set" in message and "P2P_DATA" in message


def test_the_network_is_off_in_tests():
    import socket

    from conftest import _guarded_connect, _is_loopback
    assert socket.socket.connect is _guarded_connect
    assert _is_loopback(("127.0.0.1", 80)) and _is_loopback(("::1", 80, 0, 0)) and _is_loopback(("localhost", 1))
    assert not _is_loopback(("192.0.2.1", 80)) and not _is_loopback(("example.org", 443))

"""A bad image met while `p2p train` reads its split is the dataset checker's message (which file, what is
wrong, what to do), not a traceback through the DataLoader; the steps made before it are kept."""
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from test_engine import data, make_pairs, state, tiny, train  # noqa: F401  (data: the fixture)


def png_bomb(path, side=20_000):
    "A valid PNG header for a side x side grey image (400 M pixels) and no pixels: Pillow refuses it as a bomb."
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def truncate(path):
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 3])


def see_through(path):
    with Image.open(path) as img:
        rgba = img.convert("RGBA")
    pixels = np.asarray(rgba).copy()
    pixels[..., 3] = 0
    Image.fromarray(pixels).save(path)


@pytest.mark.parametrize("spoil, said", [(truncate, "is truncated"), (see_through, "has transparent pixels"),
                                         (png_bomb, "DecompressionBomb")])
@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_bad_training_image_stops_with_its_name_and_keeps_the_steps_made(data, tmp_path, capsys, spoil, said, workers):
    bad = sorted((data / "train").iterdir())[-1]  # the last of 5 in name order
    spoil(bad)
    result = train(tiny(data, tmp_path / "ck", "--serial_batches", "--num_workers", workers, "--max_steps", "8"))
    assert (result["status"], result["exit_code"], result["step"]) == ("bad_data", 1, 4)
    err = capsys.readouterr().err
    assert str(bad) in err and said in err and "p2p check-data" in err
    assert "Traceback" not in err and "DataLoader worker" not in err
    assert state(tmp_path / "ck" / "run")["step"] == 4  # the 4 steps before the bad pair are saved


def test_an_empty_val_folder_trains_without_validation_with_a_note(tmp_path, capsys):
    root = make_pairs(tmp_path / "pairs", counts=(("train", 3),))
    (root / "val").mkdir()
    result = train(tiny(root, tmp_path / "ck", "--max_steps", "2"))
    assert result["status"] == "done"
    assert "has no images: training without validation" in capsys.readouterr().err


def test_a_bad_validation_image_is_named_before_training(data, tmp_path, capsys):
    bad = sorted((data / "val").iterdir())[0]
    truncate(bad)
    steps = []
    with pytest.raises(SystemExit, match=rf"a validation image cannot be used .*\n.*{bad.name} is truncated"):
        train(tiny(data, tmp_path / "ck", "--max_steps", "2"), on_step=lambda step, losses: steps.append(step))
    assert steps == []


def test_a_val_split_in_the_folder_layout_is_validated(data, tmp_path, capsys):
    for pair in sorted((data / "val").iterdir()):  # the A|B files as val/A/x.png and val/B/x.png
        with Image.open(pair) as img:
            half = img.width // 2
            for side, box in (("A", (0, 0, half, img.height)), ("B", (half, 0, img.width, img.height))):
                (data / "val" / side).mkdir(exist_ok=True)
                img.crop(box).save(data / "val" / side / pair.name)
        pair.unlink()
    train(tiny(data, tmp_path / "ck", "--max_steps", "2"))
    assert "training without validation" not in capsys.readouterr().err
    records = [json.loads(line) for line in (tmp_path / "ck" / "run" / "loss_log.jsonl").read_text().splitlines()]
    assert any("val_L1" in record for record in records)

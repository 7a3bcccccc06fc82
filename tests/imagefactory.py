"""Small good and bad image files for the data tests, written with PIL into a temporary folder.

Every maker takes the path to write and returns it. `noise` images are random (seeded), so that
two different crops or a flip of them never look the same: an alignment bug cannot hide.
"""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image


def noise(width: int, height: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    """Random uint8 pixels, H x W x channels (H x W when channels == 1)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)
    return pixels[:, :, 0] if channels == 1 else pixels


def permuted_pair(half_width: int = 260, height: int = 264, seed: int = 0) -> np.ndarray:
    """An A|B image whose B half is the A half with its channels rotated (B = A[..., [2, 0, 1]]).

    The halves differ, yet every resize, crop and flip commutes with a channel permutation, so after
    any correct shared transform B_tensor == A_tensor[[2, 0, 1]] exactly."""
    a = noise(half_width, height, seed)
    return np.concatenate([a, a[:, :, [2, 0, 1]]], axis=1)


def write_array(path: Path, pixels: np.ndarray, **save_args) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **save_args)
    return path


def write_pair(path: Path, half_width: int = 260, height: int = 264, seed: int = 0) -> Path:
    """A good aligned A|B file (channel-permuted halves, see permuted_pair)."""
    return write_array(path, permuted_pair(half_width, height, seed))


def jpeg_bytes(width: int = 128, height: int = 64, seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(noise(width, height, seed)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def png_bytes(width: int = 128, height: int = 64, seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(noise(width, height, seed)).save(buffer, "PNG")
    return buffer.getvalue()


def write_bytes(path: Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def corrupt_jpeg(path: Path) -> Path:
    """A JPEG whose Huffman table is overwritten: PIL reads the header, decoding fails."""
    data = bytearray(jpeg_bytes())
    table = data.find(b"\xff\xc4")  # DHT marker
    assert table > 0
    data[table + 4: table + 20] = b"\xff" * 16
    return write_bytes(path, bytes(data))


def truncated_png(path: Path) -> Path:
    """The first half of a valid 128x64 PNG (an interrupted download)."""
    data = png_bytes()
    return write_bytes(path, data[: len(data) // 2])


def truncated_jpeg(path: Path) -> Path:
    data = jpeg_bytes()
    return write_bytes(path, data[: len(data) // 2])


def not_an_image(path: Path) -> Path:
    """Text saved under an image name, like an HTML error page from a failed download."""
    return write_bytes(path, b"<html><body>404 Not Found</body></html>\n")


def empty_file(path: Path) -> Path:
    return write_bytes(path, b"")


def symlink_loop(path: Path) -> Path:
    """A symlink that points at itself (opening it fails with ELOOP)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(path.name, path)
    return path


def sixteen_bit_pair(path: Path, half_width: int = 256, height: int = 128) -> Path:
    """A 16-bit grayscale ('I;16') A|B PNG. Each row holds levels k * 257 for k = 0..255 (0..65535)
    repeated, so correct scaling to 8 bits gives exactly k, and clipping would give 255 for k >= 1."""
    levels = (np.arange(half_width) % 256).astype(np.uint16) * 257
    half = np.tile(levels, (height, 1))
    return write_array(path, np.concatenate([half, half], axis=1))


def tree_snapshot(root: Path) -> dict[str, str]:
    """Every entry under root: file content hashes, symlink targets, folders; to prove nothing changed."""
    snapshot = {}
    for folder, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            path = Path(folder) / name
            key = str(path.relative_to(root))
            if path.is_symlink():
                snapshot[key] = "link -> " + os.readlink(path)
            elif path.is_dir():
                snapshot[key] = "dir"
            else:
                snapshot[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return snapshot


def aligned_pairs(root: Path, counts=(("train", 5), ("val", 3)), size: int = 72, seed: int = 0,
                  same: bool = False, block: int = 4) -> Path:
    """A tiny aligned A|B dataset under root/{split}/: A is blocky noise (size x size, `block`-pixel
    squares), B its photographic negative (or A itself with same=True), so a translation is learnable."""
    rng = np.random.default_rng(seed)
    for split, count in counts:
        folder = Path(root) / split
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            a = rng.integers(0, 256, (size // block, size // block, 3), dtype=np.uint8)
            a = a.repeat(block, 0).repeat(block, 1)
            Image.fromarray(np.concatenate([a, a if same else 255 - a], axis=1)).save(folder / f"{i}.png")
    return Path(root)

"""Reading image files safely, whatever a dataset folder holds (hand-written plumbing, used by lesson 05's
dataset, `p2p check-data`, `p2p combine` and inference; lesson 05 names it and shows what it does).

- `open_image`: open and fully decode one file; every failure (missing, a symlink loop, unreadable, not a
  regular file, empty, truncated, not an image, a decompression bomb) is a PairedDataError naming the file.
- `convert_mode`: a decision per image mode instead of PIL's convert('RGB'), which clips 16-bit images to
  white and drops transparency silently: 16-bit grey is scaled, transparent pixels and floats refused.
- `image_notes`: what `p2p check-data` warns about (grey, palette, 16-bit, CMYK, alpha, EXIF rotation).
- `list_images`: the image files directly in a folder, sorted by name as the official code lists them, and
  the unusable entries as PairedDataErrors.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = ["IMG_EXTENSIONS", "PairedDataError", "os_reason", "open_image", "SIXTEEN_BIT_MODES", "convert_mode",
           "image_notes", "list_images"]

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tif", ".tiff", ".webp")


class PairedDataError(ValueError):
    """Any problem with a paired dataset. The message names the file (or folder) and says what to do;
    `path` holds it too (None when the error was rebuilt from a DataLoader worker's message)."""

    def __init__(self, text, path=None):
        super().__init__(text)
        self.path = path


def os_reason(err: OSError) -> str:
    """A short, human reason for an OSError met while reading a path."""
    if err.errno == errno.ELOOP:
        return "is a symlink loop (the link leads back to itself); point it at a real file or remove the link"
    if err.errno == errno.ENOENT:
        return "does not exist (a broken symlink, or it was removed while we looked)"
    if err.errno in (errno.EACCES, errno.EPERM):
        return "cannot be read (permission denied); fix its permissions"
    return f"cannot be read ({err.strerror or err})"


def open_image(path) -> Image.Image:
    """Open and fully decode one image file; every failure is a PairedDataError naming the file.

    Decoding the whole image (not just the header) is what finds truncated or corrupt data.
    The file is only read. (If some other code set PIL's ImageFile.LOAD_TRUNCATED_IMAGES = True,
    PIL pads truncated images silently and this check cannot see them.)"""
    try:
        info = os.stat(path)
    except OSError as err:
        raise PairedDataError(f"{path} {os_reason(err)}.", path) from None
    if not stat.S_ISREG(info.st_mode):  # opening a FIFO would wait for a writer, forever
        raise PairedDataError(f"{path} is not a regular file (a FIFO, socket or device): move it out of the "
                              "dataset.", path)
    if info.st_size == 0:
        raise PairedDataError(f"{path} is empty (0 bytes): re-copy it from its source, or move it out "
                              "of the dataset.", path)
    try:
        with Image.open(path) as img:
            img.load()
    except UnidentifiedImageError:
        raise PairedDataError(f"{path} is not an image PIL can read (another kind of file with an image "
                              "extension, e.g. an HTML error page from a failed download, or a badly "
                              "corrupt file): replace it, or move it out of the dataset.", path) from None
    except OSError as err:
        if "truncated" in str(err):
            raise PairedDataError(f"{path} is truncated: the file ends before the image does (an "
                                  "interrupted download or copy). Re-copy it from its source, or move it "
                                  "out of the dataset.", path) from None
        if err.errno is not None:
            raise PairedDataError(f"{path} {os_reason(err)}.", path) from None
        raise PairedDataError(f"{path} is corrupt: PIL cannot decode it ({err}). Re-copy it from its "
                              "source, or move it out of the dataset.", path) from None
    except Exception as err:  # PIL raises SyntaxError, ValueError, DecompressionBombError, ... on bad files
        raise PairedDataError(f"{path} cannot be decoded ({type(err).__name__}: {err}). Re-copy or "
                              "re-save it, or move it out of the dataset.", path) from None
    return img


SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _sixteen_to_eight(img: Image.Image, path) -> Image.Image:
    """16-bit grayscale to 8-bit 'L', scaled over the full 0..65535 range (never clipped)."""
    values = np.asarray(img).astype(np.int64)
    low, high = int(values.min()), int(values.max())
    if low < 0 or high > 65535:
        raise PairedDataError(f"{path} is a {img.mode} image with values {low}..{high}, outside 16 bits "
                              "(0..65535), so there is no safe way to map it to 8 bits: convert it to an "
                              "8-bit image yourself, choosing the range.", path)
    if high <= 255:
        raise PairedDataError(f"{path} is a 16-bit image whose values never exceed {high} (of 65535): it "
                              "looks like 8-bit data saved in a 16-bit file, which scaled correctly would "
                              "be almost black. Re-save it as 8-bit, e.g. Image.fromarray(np.asarray(img)"
                              ".astype('uint8')).save(...).", path)
    return Image.fromarray(np.rint(values * (255 / 65535)).astype(np.uint8))


def convert_mode(img: Image.Image, channels: int, path=None) -> Image.Image:
    """The image as 'RGB' (channels=3) or 'L' (channels=1). The policy, per mode of the file:

    RGB: as is; for 1 channel, its luma (PIL's ITU-R 601-2, as the official Grayscale transform).
    L, 1: kept for 1 channel; repeated into R=G=B for 3 channels.
    P: converted through its palette (a palette with a transparent colour is treated as RGBA).
    CMYK, YCbCr, LAB, HSV: converted to RGB by PIL (CMYK without colour management).
    RGBA, LA, PA, RGBa, La: the alpha is dropped when fully opaque (all 255); any transparent
        pixel raises PairedDataError (the background colour would be data; flatten it yourself).
    I;16*, I with values in 0..65535: 16-bit grayscale scaled to 8 bits, round(v * 255 / 65535)
        (the official `.convert('RGB')` clips it instead); values all <= 255 (8-bit data in a 16-bit
        file, which would come out black), values outside 0..65535, and F (float) raise it.
    Errors name `path`."""
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode == "PA":
        img = img.convert("RGBA")
    if img.mode in SIXTEEN_BIT_MODES:
        img = _sixteen_to_eight(img, path)
    elif img.mode == "F":
        raise PairedDataError(f"{path} is a 32-bit float image (mode F); its value range is unknown. "
                              "Convert it to an 8-bit image yourself, choosing the range.", path)
    bands = img.getbands()
    if "A" in bands or "a" in bands:
        alpha = img.getchannel("A" if "A" in bands else "a")
        lowest = alpha.getextrema()[0]
        if lowest < 255:
            transparent = int((np.asarray(alpha) < 255).sum())
            raise PairedDataError(
                f"{path} has transparent pixels ({img.mode}, {transparent} of {img.width * img.height} pixels "
                "with alpha < 255). pix2pix has no alpha channel, and the background to put behind them is "
                "data only you can choose. Flatten the file yourself, e.g. on white: "
                "Image.alpha_composite(Image.new('RGBA', img.size, 'white'), img.convert('RGBA'))"
                ".convert('RGB').save(NEW_PATH).", path)
        img = img.getchannel(0) if bands[0] == "L" else img.convert("RGBA").convert("RGB")
    wanted = "RGB" if channels == 3 else "L"
    return img if img.mode == wanted else img.convert(wanted)


def image_notes(img: Image.Image) -> list[str]:
    """What is surprising about an image, as `p2p check-data` warns about it (empty for plain RGB)."""
    notes = []
    mode, bands = img.mode, img.getbands()
    if mode in ("L", "1"):
        notes.append(f"grayscale (mode {mode}): a 3-channel side repeats it into R=G=B; "
                     "use input_nc/output_nc 1 if that side really has one channel")
    elif mode in ("P", "PA"):
        notes.append(f"palette image (mode {mode}): converted to RGB through its palette")
    elif mode in SIXTEEN_BIT_MODES:
        notes.append(f"16-bit grayscale (mode {mode}): scaled to 8 bits (v * 255 / 65535)")
    elif mode == "CMYK":
        notes.append("CMYK image: converted to RGB without colour management (colours may shift)")
    elif mode not in ("RGB", "F") and "A" not in bands and "a" not in bands:  # F is refused (convert_mode)
        notes.append(f"mode {mode}: converted to RGB by PIL")
    if "A" in bands or "a" in bands:
        notes.append(f"alpha channel (mode {mode}): dropped when fully opaque, refused when transparent")
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block is not our problem: the pixels decoded fine
        orientation = 1
    if orientation not in (None, 1):
        notes.append(f"EXIF orientation {orientation}: viewers show this image rotated or mirrored, but training "
                     "uses the stored pixels (so does the official code); apply it with "
                     "PIL.ImageOps.exif_transpose and re-save if A and B disagree")
    return notes


def _stat_problem(path) -> str | None:
    """Why `path` cannot be used as a file (None if it can); follows symlinks."""
    try:
        info = os.stat(path)
    except OSError as err:
        return f"{path} {os_reason(err)}."
    if stat.S_ISDIR(info.st_mode):
        return None
    if not stat.S_ISREG(info.st_mode):
        return f"{path} is not a regular file (a FIFO, socket or device): move it out of the dataset."
    if info.st_size == 0:
        return f"{path} is empty (0 bytes): re-copy it from its source, or move it out of the dataset."
    return None


def list_images(folder) -> tuple[list[Path], list[PairedDataError], list[Path]]:
    """The image files directly in `folder` (sorted by name), the problems met, and what was skipped.

    Returns (images, problems, skipped): problems are PairedDataErrors for unusable image entries
    (empty, broken link, symlink loop); skipped lists other files and subfolders (hidden ones omitted)."""
    images, problems, skipped = [], [], []
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError as err:
        raise PairedDataError(f"{folder} {os_reason(err)}.", Path(folder)) from None
    for entry in entries:
        path = Path(folder) / entry.name
        if entry.name.startswith("."):
            continue
        problem = _stat_problem(path)
        if problem:
            (problems.append(PairedDataError(problem, path)) if path.suffix.lower() in IMG_EXTENSIONS
             else skipped.append(path))
        elif path.is_dir() or path.suffix.lower() not in IMG_EXTENSIONS:
            skipped.append(path)
        else:
            images.append(path)
    return images, problems, skipped

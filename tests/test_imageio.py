"""allnet_lib.imageio.read_image: one array format from every file format, loud conversions,
clear errors for broken files, and the 600 -> 450 final-test crop."""

import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from allnet_lib.imageio import ImageConversionWarning, ImageReadError, inspect_image, read_image


@pytest.fixture
def rgb():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)


def _quiet_read(path):
    """read_image that fails the test on any warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return read_image(path)


@pytest.mark.parametrize("ext", ["bmp", "png", "tif", "tiff"])
def test_lossless_formats_give_identical_arrays(tmp_path, rgb, ext):
    path = tmp_path / f"cell.{ext}"
    Image.fromarray(rgb).save(path)
    array = _quiet_read(path)
    assert array.dtype == np.uint8 and array.shape == (20, 24, 3) and array.flags.c_contiguous
    np.testing.assert_array_equal(array, rgb)


def test_jpeg_reads_as_rgb_close_to_the_original(tmp_path):
    smooth = np.zeros((32, 32, 3), np.uint8)
    smooth[8:24, 8:24] = (180, 90, 200)
    path = tmp_path / "cell.jpg"
    Image.fromarray(smooth).save(path, quality=100)
    array = _quiet_read(path)
    assert array.shape == (32, 32, 3) and array.dtype == np.uint8
    assert np.abs(array.astype(int) - smooth).mean() < 3


def test_jpeg_exif_rotation_is_applied(tmp_path):
    image = Image.fromarray(np.zeros((10, 30, 3), np.uint8))  # 30 wide, 10 high
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "phone.jpg"
    image.save(path, exif=exif)
    assert _quiet_read(path).shape == (30, 10, 3)


def _warns(path, fragment):
    with pytest.warns(ImageConversionWarning) as record:
        array = read_image(path)
    messages = " ".join(str(w.message) for w in record)
    assert str(path) in messages and fragment in messages
    return array


def test_grayscale_is_repeated_to_rgb_with_a_warning(tmp_path):
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    path = tmp_path / "gray.png"
    Image.fromarray(gray, "L").save(path)
    array = _warns(path, "grayscale")
    assert array.shape == (8, 8, 3)
    for channel in range(3):
        np.testing.assert_array_equal(array[..., channel], gray)


def test_alpha_is_composited_onto_black_with_a_warning(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[...] = (200, 100, 50, 255)
    rgba[0, 0] = (200, 100, 50, 0)  # transparent -> black background
    rgba[0, 1] = (200, 100, 50, 128)  # half -> half
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, "RGBA").save(path)
    array = _warns(path, "alpha")
    assert tuple(array[1, 1]) == (200, 100, 50)
    assert tuple(array[0, 0]) == (0, 0, 0)
    assert tuple(array[0, 1]) == (100, 50, 25)


def test_palette_is_converted_with_a_warning(tmp_path, rgb):
    path = tmp_path / "palette.png"
    paletted = Image.fromarray(rgb).quantize(colors=16)
    paletted.save(path)
    array = _warns(path, "palette")
    np.testing.assert_array_equal(array, np.asarray(paletted.convert("RGB")))


def test_16bit_grayscale_is_scaled_to_8_bits(tmp_path):
    values = np.array([[0, 257 * 100], [65535, 257 * 7]], np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)  # mode I;16
    array = _warns(path, "16-bit")
    np.testing.assert_array_equal(array[..., 0], [[0, 100], [255, 7]])


def _png_rgb16(array: np.ndarray) -> bytes:
    """A 48-bit RGB PNG written by hand (Pillow cannot write one)."""
    h, w, _ = array.shape
    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def test_16bit_rgb_is_reduced_to_8_bits_with_a_warning(tmp_path):
    path = tmp_path / "rgb48.png"
    path.write_bytes(_png_rgb16(np.full((3, 3, 3), [65535, 32768, 0], np.uint16)))
    array = _warns(path, "16 bits per channel")
    assert tuple(array[0, 0]) == (255, 128, 0)


def test_cmyk_is_converted_with_a_warning(tmp_path):
    path = tmp_path / "print.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(path)
    array = _warns(path, "CMYK")
    assert array.shape == (8, 8, 3)


def test_warn_false_silences_conversions(tmp_path):
    path = tmp_path / "gray.png"
    Image.new("L", (5, 5), 9).save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image(path, warn=False).shape == (5, 5, 3)


def test_final_test_600_is_centre_cropped_to_450(tmp_path):
    big = np.zeros((600, 600, 3), np.uint8)
    big[75, 75] = (1, 2, 3)  # first pixel kept
    big[524, 524] = (4, 5, 6)  # last pixel kept
    big[74, 74] = (9, 9, 9)  # just outside
    path = tmp_path / "final.bmp"
    Image.fromarray(big).save(path)
    array = _quiet_read(path)
    assert array.shape == (450, 450, 3)
    assert tuple(array[0, 0]) == (1, 2, 3) and tuple(array[-1, -1]) == (4, 5, 6)
    assert array.max() == 6


@pytest.mark.parametrize("shape", [(450, 450), (500, 500), (600, 450)])
def test_other_sizes_are_not_cropped(tmp_path, shape):
    path = tmp_path / "other.png"
    Image.fromarray(np.zeros(shape + (3,), np.uint8)).save(path)
    assert _quiet_read(path).shape == shape + (3,)


def _error(path):
    with pytest.raises(ImageReadError) as error:
        read_image(path)
    assert isinstance(error.value, ValueError)
    assert str(path) in str(error.value)
    return str(error.value)


def test_zero_byte_file(tmp_path):
    path = tmp_path / "UID_1_1_1_all.bmp"
    path.touch()
    message = _error(path)
    assert "empty" in message and "again" in message


@pytest.mark.parametrize("ext", ["bmp", "png"])
def test_truncated_file(tmp_path, rgb, ext):
    path = tmp_path / f"cut.{ext}"
    Image.fromarray(rgb).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    message = _error(path)
    assert "truncated or corrupt" in message


def test_text_file_is_not_an_image(tmp_path):
    path = tmp_path / "notes.bmp"
    path.write_text("this is not an image")
    assert "not an image" in _error(path)


def test_html_error_page_is_recognised(tmp_path):
    path = tmp_path / "download.png"
    path.write_text("<!DOCTYPE html><html><body>Please log in</body></html>")
    assert "HTML page" in _error(path)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such image"):
        read_image(tmp_path / "nope.bmp")


def test_inspect_image_reports_the_file_before_conversion(tmp_path):
    path = tmp_path / "big.bmp"
    Image.new("L", (600, 600)).save(path)
    info = inspect_image(path)
    assert (info.format, info.mode, info.width, info.height, info.bits16) == ("BMP", "L", 600, 600, False)


def _png_claiming(path, width, height):
    """A tiny PNG whose header claims ``width`` x ``height`` (an 'image bomb' header)."""
    import struct
    import zlib

    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4: ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr: ihdr + 17])) & 0xFFFFFFFF
    data[ihdr + 17: ihdr + 21] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))
    return path


def test_image_bomb_headers_are_refused_with_the_file_name(tmp_path):
    for side in (12_000, 60_000):  # above Pillow's warning limit, and above its error limit
        bomb = _png_claiming(tmp_path / f"UID_1_{side}_1_all.png", side, side)
        with pytest.raises(ImageReadError, match=f"UID_1_{side}_1_all.png: the file claims an image far too large"):
            read_image(bomb)

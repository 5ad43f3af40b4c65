"""Cropping: the report's 450 -> 400 centre crop, its losslessness on the demo set, folder runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from allnet_lib import crop, demo


@pytest.fixture(scope="module")
def demo_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("crop") / "demo"
    return demo.make_demo_dataset(out, n_images=60, image_size=96, progress=False)


def _images(root):
    return sorted((root / demo.TRAINING_DIR).rglob("*.bmp"))


def test_center_crop_single_and_batch():
    image = np.arange(450 * 450 * 3, dtype=np.int64).reshape(450, 450, 3)
    out = crop.center_crop(image, 400)
    assert out.shape == (400, 400, 3)
    assert np.array_equal(out, image[25:425, 25:425])
    batch = np.stack([image, image + 1])
    assert np.array_equal(crop.center_crop(batch, 400), batch[:, 25:425, 25:425])
    odd = np.zeros((7, 9, 3))
    assert crop.center_crop(odd, 4).shape == (4, 4, 3)
    assert crop.center_crop(image[..., 0], 10).shape == (10, 10)


def test_center_crop_rejects_a_crop_larger_than_the_image():
    with pytest.raises(ValueError, match="does not fit an image of 96x96"):
        crop.center_crop(np.zeros((96, 96, 3), np.uint8), 400)
    assert crop.scaled_crop_size(96) == 85 and crop.scaled_crop_size(450) == 400


def test_check_crop_counts_cut_pixels():
    image = np.zeros((450, 450, 3), np.uint8)
    image[200:250, 200:250] = 180  # a cell in the middle
    assert crop.check_crop(image) == 0
    image[0:3, 0:4, 1] = 200  # something in the border
    image[440, 440] = 5  # below the black threshold: noise, not cell
    assert crop.check_crop(image) == 12
    batch = np.stack([image, np.zeros_like(image)])
    assert crop.check_crop(batch).tolist() == [12, 0]


def test_the_report_crop_is_lossless_on_every_demo_image(demo_set):
    side = 96
    size = crop.scaled_crop_size(side)
    images = np.stack([np.asarray(Image.open(p)) for p in _images(demo_set)])
    assert images.shape[1:] == (side, side, 3)
    assert crop.check_crop(images, size).max() == 0
    full = [demo.render_cell(np.random.default_rng(k), label) for k in range(3) for label in ("all", "hem")]
    assert crop.check_crop(np.stack(full), 400).max() == 0  # and at the real 450 size


def test_tight_crop_is_square_with_margin_and_never_cuts():
    image = np.zeros((100, 120, 3), np.uint8)
    image[30:50, 40:80] = 200  # 20 x 40 box
    out = crop.tight_crop(image, margin=5)
    assert out.shape == (50, 50, 3)
    assert crop.foreground(out).sum() == 20 * 40
    corner = np.zeros((60, 60, 3), np.uint8)
    corner[0:10, 0:30] = 90  # touches the edge: the square is padded with black
    out = crop.tight_crop(corner, margin=3)
    assert out.shape == (36, 36, 3) and crop.foreground(out).sum() == 300
    with pytest.raises(ValueError, match="all black"):
        crop.tight_crop(np.zeros((10, 10, 3), np.uint8))


def test_crop_folder_keeps_structure_and_reports(demo_set, tmp_path):
    src = demo_set / demo.TRAINING_DIR
    (src / "labels.csv").write_text("a,b\n")
    bad = np.zeros((96, 96, 3), np.uint8)
    bad[1, 1] = 255  # a "cell" the crop would cut
    Image.fromarray(bad).save(src / "fold_0" / "all" / "UID_99_1_1_all.bmp")
    try:
        with pytest.warns(UserWarning, match="cut cell pixels in 1 image"):
            table = crop.crop_folder(src, tmp_path / "cropped", progress=False)
    finally:
        (src / "labels.csv").unlink()
        (src / "fold_0" / "all" / "UID_99_1_1_all.bmp").unlink()
    assert isinstance(table, pd.DataFrame)
    assert (table.action == "cropped").sum() == 61 and (table.action == "copied").sum() == 1
    assert table.loc[table.path.str.endswith("UID_99_1_1_all.bmp"), "cut_pixels"].item() == 1
    assert (table.cut_pixels.fillna(0) > 0).sum() == 1
    out_files = sorted((tmp_path / "cropped").rglob("*.bmp"))
    sources = table.loc[table.action == "cropped", "path"]
    assert [p.relative_to(tmp_path / "cropped") for p in out_files] == sorted(
        Path(p).relative_to(src) for p in sources
    )
    first = np.asarray(Image.open(out_files[0]))
    assert first.shape == (85, 85, 3)
    assert (tmp_path / "cropped" / "labels.csv").read_text() == "a,b\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cropped"]  # no temporary sibling left


def test_crop_folder_never_overwrites(demo_set, tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(FileExistsError, match="already exists"):
        crop.crop_folder(demo_set, tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match="outside the source"):
        crop.crop_folder(demo_set, demo_set / "cropped", progress=False)
    assert not (demo_set / "cropped").exists()


def _cell(size=48):
    image = np.zeros((size, size, 3), np.uint8)
    image[16:32, 16:32] = (200, 120, 160)
    return image


def test_crop_folder_lists_linked_and_unreadable_folders_and_conversions(tmp_path, monkeypatch):
    import os

    src = tmp_path / "src"
    (src / "all").mkdir(parents=True)
    Image.fromarray(_cell()).save(src / "all" / "rgb.bmp")
    Image.fromarray(_cell()).convert("CMYK").save(src / "all" / "cmyk.jpg")
    Image.fromarray((_cell()[..., 0].astype(np.uint16) * 257)).save(src / "all" / "gray16.png")
    Image.fromarray(_cell()).convert("RGBA").save(src / "all" / "rgba.png")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    Image.fromarray(_cell()).save(elsewhere / "x.bmp")
    (src / "hem").symlink_to(elsewhere, target_is_directory=True)
    real_walk = os.walk

    def walk(top, onerror=None, **kwargs):  # as os.walk reports a folder it may not list (root reads all)
        onerror(PermissionError(13, "Permission denied", str(src / "locked")))
        yield from real_walk(top, onerror=onerror, **kwargs)

    monkeypatch.setattr(crop.os, "walk", walk)
    with pytest.warns(UserWarning, match="could not be read"):
        table = crop.crop_folder(src, tmp_path / "out", progress=False)
    errors = table[table.action == "error"].set_index("path")["error"]
    assert "symbolic link" in errors[str(src / "hem")]
    assert "cannot be read (Permission denied)" in errors[str(src / "locked")]
    conversion = table.set_index(table.path.map(lambda p: Path(p).name))["conversion"]
    assert pd.isna(conversion["rgb.bmp"])
    assert "mode CMYK" in conversion["cmyk.jpg"]
    assert "16-bit" in conversion["gray16.png"]
    assert "alpha" in conversion["rgba.png"]

"""Input pipeline: tf.data and NumPy give the same images, in table order, cached, augmented
without touching labels; odd files (TIFF, RGBA, 600x600) take the careful path."""

import functools
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from allnet_lib import pipeline
from allnet_lib.augment import identify_orientation
from allnet_lib.demo import make_demo_dataset
from allnet_lib.reader import index_dataset

SIZE = 32


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    root = make_demo_dataset(tmp_path_factory.mktemp("demo") / "demo", n_images=18,
                             image_size=96, progress=False)
    return index_dataset(root, progress=False).table


def _collect(dataset):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in dataset])
    return np.concatenate(xs), np.concatenate(ys)


def test_crop_is_the_reports_fraction():
    assert pipeline.crop_size_for(450) == 400
    assert pipeline.crop_size_for(96) == 85
    assert pipeline.crop_size_for(96, None) == 96
    with pytest.raises(ValueError, match="crop must be between 1 and 450"):
        pipeline.crop_size_for(96, 500)


def test_load_arrays_shapes_range_and_label_order(table):
    x, y = pipeline.load_arrays(table, image_size=SIZE, progress=False)
    assert x.shape == (len(table), SIZE, SIZE, 3) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.3
    assert y.dtype == np.int32
    np.testing.assert_array_equal(y, table["y"].to_numpy())
    np.testing.assert_array_equal(y, (table["label"] == "all").astype(int))


def test_make_dataset_matches_load_arrays(table):
    x, y = pipeline.load_arrays(table, image_size=SIZE, progress=False)
    xt, yt = _collect(pipeline.make_dataset(table, image_size=SIZE, batch_size=5))
    assert xt.shape == x.shape and xt.dtype == np.float32
    np.testing.assert_array_equal(yt, y)
    assert yt.dtype == np.int32
    # TensorFlow's and Pillow's antialiased bilinear resize agree to about one grey level
    assert np.abs(xt - x).mean() < 0.5 / 255 and np.abs(xt - x).max() <= 2.5 / 255


def test_shuffle_keeps_pairs_and_reshuffles_each_epoch(table):
    reference, ref_y = _collect(pipeline.make_dataset(table, image_size=SIZE, batch_size=64))
    data = pipeline.make_dataset(table, image_size=SIZE, batch_size=64, shuffle=True, seed=3)
    (x1, y1), (x2, y2) = _collect(data), _collect(data)
    order1 = [int(np.argmin(np.abs(reference - img).sum(axis=(1, 2, 3)))) for img in x1]
    order2 = [int(np.argmin(np.abs(reference - img).sum(axis=(1, 2, 3)))) for img in x2]
    assert sorted(order1) == list(range(len(table)))
    np.testing.assert_array_equal(y1, ref_y[order1])
    np.testing.assert_array_equal(y2, ref_y[order2])
    assert order1 != order2


def test_cache_holds_decoded_images(table, tmp_path):
    copy = table.copy()
    copy["path"] = [shutil.copy(p, tmp_path / f"{i}.bmp") for i, p in enumerate(table["path"])]
    data = pipeline.make_dataset(copy, image_size=SIZE, batch_size=8, cache=True)
    first, _ = _collect(data)
    for path in copy["path"]:
        Path(path).unlink()
    second, _ = _collect(data)  # would fail to read the deleted files without the cache
    np.testing.assert_array_equal(first, second)


def test_augmentation_rotates_and_flips_but_keeps_labels(table):
    plain, y = _collect(pipeline.make_dataset(table, image_size=SIZE, batch_size=64))
    data = pipeline.make_dataset(table, image_size=SIZE, batch_size=64, augment=True, seed=1)
    (a1, y1), (a2, y2) = _collect(data), _collect(data)
    np.testing.assert_array_equal(y1, y)
    np.testing.assert_array_equal(y2, y)
    seen = {identify_orientation(p, a) for p, a in zip(plain, a1)}
    seen |= {identify_orientation(p, a) for p, a in zip(plain, a2)}
    assert len(seen) >= 3  # several of the eight orientations
    assert not np.array_equal(a1, a2)  # new draws every epoch


def test_augmentation_is_reproducible_from_the_seed(table):
    def epoch(seed):
        return _collect(pipeline.make_dataset(table, image_size=SIZE, batch_size=64, augment=True,
                                              seed=seed))[0]

    np.testing.assert_array_equal(epoch(5), epoch(5))


@pytest.mark.filterwarnings("ignore:.*alpha channel:UserWarning")
def test_odd_files_take_the_python_reader(table, tmp_path):
    """TIFF, RGBA PNG (alpha onto black) and a 600x600 final-test image give the same pixels
    through tf.data as through read_image."""
    rgb = np.asarray(Image.open(table["path"].iloc[0]).convert("RGB").resize((450, 450)))
    tiff = tmp_path / "a.tif"
    Image.fromarray(rgb).save(tiff)
    rgba = np.dstack([rgb, np.where(rgb.max(axis=2) > 10, 255, 0).astype(np.uint8)])
    rgba[rgba[..., 3] == 0, :3] = 200  # hidden colour under transparent pixels
    png = tmp_path / "b.png"
    Image.fromarray(rgba, "RGBA").save(png)
    big = np.zeros((600, 600, 3), np.uint8)
    big[75:525, 75:525] = rgb
    final = tmp_path / "c.bmp"
    Image.fromarray(big).save(final)
    plain = tmp_path / "d.bmp"
    Image.fromarray(rgb).save(plain)
    assert [pipeline.fast_decodable(p) for p in (tiff, png, final, plain)] == [False, False, True, True]

    odd = pd.DataFrame({"path": [str(p) for p in (tiff, png, final, plain)], "y": [1, 0, 1, 0]})
    x, y = pipeline.load_arrays(odd, image_size=SIZE, progress=False)
    xt, yt = _collect(pipeline.make_dataset(odd, image_size=SIZE, batch_size=4))
    np.testing.assert_array_equal(yt, [1, 0, 1, 0])
    assert np.abs(xt - x).max() <= 2.5 / 255
    for image in x[1:]:  # all four hold the same cell at the same scale
        assert np.abs(image - x[0]).mean() < 2 / 255


def test_array_batches_shuffle_augment_and_split_evenly():
    x = np.arange(10 * 4 * 4 * 3, dtype=np.float32).reshape(10, 4, 4, 3)
    y = np.arange(10) % 2
    data = pipeline.array_batches(x, y, batch_size=4, shuffle=True, augment=True, seed=0,
                                  multiple_of=2)
    assert len(data) == 3
    seen = []
    for i in range(len(data)):
        xb, yb = data[i]
        assert len(xb) % 2 == 0
        for image, label in zip(xb, yb):
            source = int(image.min() // (4 * 4 * 3))  # each image holds its own index range
            assert label == y[source]
            identify_orientation(x[source], image)  # raises unless a rotation / mirror image
            seen.append(source)
    assert sorted(seen) == list(range(10))
    before = list(data._order)
    data.on_epoch_end()
    assert list(data._order) != before
    with pytest.raises(ValueError, match="multiple of 2"):
        pipeline.array_batches(x, y, batch_size=3, multiple_of=2)


def test_array_batches_are_reproducible_per_epoch():
    """Epoch e's order and flips come from (seed, e): the same for a second dataset, whatever
    order the batches are asked for in, and for a resumed run that starts at epoch e."""
    x = np.arange(12 * 4 * 4 * 3, dtype=np.float32).reshape(12, 4, 4, 3)
    y = np.arange(12) % 2

    def epochs(data, n, order=None):
        seen = []
        for _ in range(n):
            batches = {i: data[i] for i in (order or range(len(data)))}
            seen.append([batches[i] for i in range(len(data))])
            data.on_epoch_end()
        return seen

    def same(a, b):
        return all(np.array_equal(p[0], q[0]) and np.array_equal(p[1], q[1])
                   for ea, eb in zip(a, b) for p, q in zip(ea, eb))

    make = functools.partial(pipeline.array_batches, x, y, batch_size=4, shuffle=True, augment=True)
    three = epochs(make(seed=5), 3)
    assert same(three, epochs(make(seed=5), 3, order=[2, 0, 1]))
    assert same(three[2:], epochs(make(seed=5, epoch=2), 1))  # resumed at the third epoch
    assert not same(three[:1], three[1:2]), "every epoch must differ"
    assert not same(three[:1], epochs(make(seed=6), 1))


def test_decoded_cache_is_made_once_reused_and_never_stale(table, tmp_path, capsys):
    """The decoded-image cache (gpu profile's feed): same pixels as decoding directly; a second
    call reads the file (memory-mapped); a changed file or another side gets a new entry."""
    direct = pipeline.decoded_images(table, image_size=SIZE, progress=False)
    assert direct.dtype == np.uint8 and direct.shape == (len(table), SIZE, SIZE, 3)
    first = pipeline.decoded_images(table, image_size=SIZE, progress=True, cache_dir=tmp_path)
    np.testing.assert_array_equal(first, direct)
    assert "cached in" in capsys.readouterr().out
    again = pipeline.decoded_images(table, image_size=SIZE, progress=True, cache_dir=tmp_path)
    assert isinstance(again, np.memmap) and "from the cache" in capsys.readouterr().out
    np.testing.assert_array_equal(again, direct)
    assert len(list(tmp_path.glob("decoded-*.npy"))) == 1
    assert not list(tmp_path.glob(".*tmp*")), "no temporary file may be left behind"

    pipeline.decoded_images(table, image_size=SIZE + 8, progress=False, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("decoded-*.npy"))) == 2

    changed = table.copy()
    changed.loc[changed.index[0], "path"] = str(_copy_to(tmp_path, table["path"].iloc[1]))
    fresh = pipeline.decoded_images(changed, image_size=SIZE, progress=False, cache_dir=tmp_path)
    np.testing.assert_array_equal(fresh[0], direct[1])
    assert len(list(tmp_path.glob("decoded-*.npy"))) == 3


def test_a_broken_cache_file_is_decoded_again(table, tmp_path, capsys):
    pipeline.decoded_images(table, image_size=SIZE, progress=False, cache_dir=tmp_path)
    (entry,) = tmp_path.glob("decoded-*.npy")
    entry.write_bytes(entry.read_bytes()[:100])  # as an interrupted copy would leave it
    x = pipeline.decoded_images(table, image_size=SIZE, progress=False, cache_dir=tmp_path)
    assert "unreadable" in capsys.readouterr().out
    np.testing.assert_array_equal(x, pipeline.decoded_images(table, image_size=SIZE, progress=False))


def test_a_missing_file_is_named(table, tmp_path):
    broken = table.copy()
    broken.loc[broken.index[0], "path"] = str(tmp_path / "gone.bmp")
    with pytest.raises((FileNotFoundError, ValueError), match="gone.bmp"):
        pipeline.decoded_images(broken, image_size=SIZE, progress=False, cache_dir=tmp_path)


def test_uint8_batches_equal_float_batches():
    """array_batches scales uint8 (a quarter of the memory) to the same float32 batches."""
    rng = np.random.default_rng(0)
    x8 = rng.integers(0, 256, size=(10, 6, 6, 3), dtype=np.uint8)
    y = np.arange(10) % 2
    common = dict(batch_size=4, shuffle=True, augment=True, seed=3)
    as_uint8 = pipeline.array_batches(x8, y, **common)
    as_float = pipeline.array_batches(x8.astype(np.float32) / 255.0, y, **common)
    for i in range(len(as_uint8)):
        (a, ya), (b, yb) = as_uint8[i], as_float[i]
        assert a.dtype == np.float32
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(ya, yb)


def _copy_to(folder: Path, path) -> Path:
    target = folder / f"copy_{Path(path).name}"
    shutil.copy(path, target)
    return target


def test_clear_errors_for_bad_tables():
    with pytest.raises(ValueError, match="'path' column"):
        pipeline.load_arrays(pd.DataFrame({"x": [1]}), image_size=SIZE)
    with pytest.raises(ValueError, match="no rows"):
        pipeline.make_dataset(pd.DataFrame({"path": []}), image_size=SIZE)


def test_labels_without_y_column_and_unlabelled_rows():
    table = pd.DataFrame({"path": ["a", "b", "c"], "label": ["all", "hem", None]})
    np.testing.assert_array_equal(pipeline.labels_of(table), [1, 0, -1])

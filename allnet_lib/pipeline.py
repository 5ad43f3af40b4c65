"""From a dataset table to model inputs: ``tf.data`` for fast training, NumPy for any backend.

Both paths do the same thing to every image: read it (600x600 final-test images are first cut to
their centre 450x450, see :func:`allnet_lib.imageio.read_image`), cut the report's centre crop
(400 of 450 pixels, the same fraction at other sizes), resize to the model's input side with an
antialiased bilinear filter, and scale to ``float32`` in ``[0, 1]``. Labels come from ``y``
(1 = ALL), in table order.

* :func:`make_dataset` builds a ``tf.data`` pipeline: decode with ``tf.io`` (plain 24-bit BMP,
  8-bit RGB PNG and JPEG without EXIF rotation; anything else goes through ``read_image``, so odd
  files give the same pixels as everywhere else), crop, resize, cache the small decoded images in
  memory, then (after the cache, so every epoch differs) random flips and rotations, shuffle,
  batch, prefetch. TensorFlow is imported only when this is called.
* :func:`decoded_images` returns the prepared images as uint8 NumPy arrays (no TensorFlow needed,
  e.g. under JAX), optionally kept in a file cache shared by every model and run at that side;
  :func:`load_arrays` scales them to float32; :func:`array_batches` feeds either to
  ``model.fit`` with the same on-the-fly augmentation.

The two resize implementations (TensorFlow's and Pillow's) agree to within about one grey level.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import struct
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from allnet_lib.labels import CLASSES

REFERENCE_SIDE = 450   # C-NMC training images; the crop is a fraction of this side
FINAL_TEST_SIDE = 600  # final-test images, centre-cut to 450 first (as read_image does)
DEFAULT_CROP = 400


# --------------------------------------------------------------------------------------------
# shared geometry
# --------------------------------------------------------------------------------------------
def crop_size_for(side: int, crop: int | None = DEFAULT_CROP) -> int:
    """Crop side for an image side: ``crop`` of 450, scaled (e.g. 96 -> 85); None = no crop."""
    from allnet_lib.crop import scaled_crop_size

    if crop is None:
        return int(side)
    if crop <= 0 or crop > REFERENCE_SIDE:
        raise ValueError(f"crop must be between 1 and {REFERENCE_SIDE} (pixels of a 450-pixel "
                         f"C-NMC image), got {crop}")
    return scaled_crop_size(int(side), crop, REFERENCE_SIDE)


def prepare_image(image: np.ndarray, image_size: int, crop: int | None = DEFAULT_CROP) -> np.ndarray:
    """uint8 (H, W, 3) -> centre square crop (the report's 400/450 of the shorter side) ->
    antialiased bilinear resize -> uint8 (s, s, 3)."""
    from PIL import Image

    from allnet_lib.crop import center_crop

    image = _centre(image, FINAL_TEST_SIDE, REFERENCE_SIDE)
    image = center_crop(image, crop_size_for(min(image.shape[:2]), crop))
    if image.shape[:2] == (image_size, image_size):
        return np.ascontiguousarray(image)
    resized = Image.fromarray(np.ascontiguousarray(image)).resize((image_size, image_size),
                                                                  Image.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


def _centre(image: np.ndarray, if_side: int, to_side: int) -> np.ndarray:
    """Centre ``to_side`` square of an ``if_side`` square image; other sizes unchanged."""
    if image.shape[:2] != (if_side, if_side):
        return image
    start = (if_side - to_side) // 2
    return image[start:start + to_side, start:start + to_side]


def labels_of(table: pd.DataFrame) -> np.ndarray:
    """int32 labels in table order: ``y`` if present, else from ``label``; -1 where unknown."""
    if "y" in table.columns:
        y = pd.to_numeric(table["y"], errors="coerce")
    elif "label" in table.columns:
        y = table["label"].astype(str).str.lower().map({c: i for i, c in enumerate(CLASSES)})
    else:
        y = pd.Series(np.nan, index=table.index)
    return y.fillna(-1).astype(np.int32).to_numpy()


def _check_table(table: pd.DataFrame, image_size: int) -> None:
    if not isinstance(table, pd.DataFrame) or "path" not in table.columns:
        raise ValueError("expected a dataset table (DataFrame with a 'path' column, as made by "
                         "allnet_lib.reader.index_dataset(root).table)")
    if len(table) == 0:
        raise ValueError("the table has no rows: nothing to load. Check the split or the data "
                         "folder (allnet index DATA).")
    if int(image_size) != image_size or image_size < 8:
        raise ValueError(f"image_size must be an integer side of at least 8 pixels, got {image_size!r}")


# --------------------------------------------------------------------------------------------
# NumPy path (any backend)
# --------------------------------------------------------------------------------------------
def decoded_images(table: pd.DataFrame, *, image_size: int, crop: int | None = DEFAULT_CROP,
                   progress: bool = True, cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """All images of ``table`` decoded, cropped and resized: uint8 (n, s, s, 3), in table order.

    uint8 is a quarter of the memory of float32 (10,000 images at 299 px: 2.7 GB instead of
    10.7 GB); :func:`array_batches` scales each batch to [0, 1] as it is fed.

    With ``cache_dir`` (e.g. ``paths.cache_dir()``) the decoded images are kept there as one
    ``.npy`` file per (files, side, crop) and memory-mapped read-only: a GPU fed from files
    otherwise waits on the CPU's decoding, and five models at two shared sides would decode the
    same files again and again. The key covers every file's path, size and modification time, so
    a changed file is never served stale. Without room on the disk (twice the array's size
    free) the images are decoded into memory instead, and that is said."""
    _check_table(table, image_size)
    paths = table["path"].astype(str).tolist()
    shape = (len(paths), int(image_size), int(image_size), 3)
    if cache_dir is None:
        return _decode_into(np.empty(shape, dtype=np.uint8), paths, image_size, crop, progress)
    from allnet_lib.paths import display_path

    cache_dir = Path(cache_dir).expanduser()
    target = cache_dir / f"decoded-{_cache_key(paths, image_size, crop)}-{shape[0]}x{shape[1]}.npy"
    if target.is_file():
        try:
            cached = np.load(target, mmap_mode="r")
            if cached.shape == shape and cached.dtype == np.uint8:
                _say(progress, f"decoded images from the cache: {display_path(target)}")
                return cached
        except (OSError, ValueError):
            pass
        _say(True, f"note: the cached images in {display_path(target)} are unreadable "
                   "(an interrupted write?); decoding again")
        target.unlink(missing_ok=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    needed = int(np.prod(shape))
    free = shutil.disk_usage(cache_dir).free
    if free < 2 * needed:
        _say(True, f"note: not caching the decoded images: {needed / 1e9:.1f} GB needed, "
                   f"{free / 1e9:.1f} GB free in {display_path(cache_dir)}; decoding into memory")
        return _decode_into(np.empty(shape, dtype=np.uint8), paths, image_size, crop, progress)
    temporary = cache_dir / f".{target.stem}.{uuid.uuid4().hex[:8]}.tmp.npy"
    try:
        out = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.uint8, shape=shape)
        _decode_into(out, paths, image_size, crop, progress)
        out.flush()
        del out
        os.replace(temporary, target)  # atomic: a reader sees the whole file or none
    finally:
        temporary.unlink(missing_ok=True)
    _say(progress, f"decoded images cached in {display_path(target)} ({needed / 1e6:.0f} MB)")
    return np.load(target, mmap_mode="r")


def load_arrays(table: pd.DataFrame, *, image_size: int, crop: int | None = DEFAULT_CROP,
                progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """All images of ``table`` as ``x`` float32 (n, s, s, 3) in [0, 1] and ``y`` int32 (n,)."""
    x = decoded_images(table, image_size=image_size, crop=crop, progress=progress)
    return x.astype(np.float32) / 255.0, labels_of(table)


def _decode_into(out: np.ndarray, paths: list[str], image_size: int, crop: int | None,
                 progress: bool) -> np.ndarray:
    from tqdm.auto import tqdm

    from allnet_lib.imageio import read_image

    def load(path: str) -> np.ndarray:
        return prepare_image(read_image(path), image_size, crop)

    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:  # Pillow decodes without holding the GIL
        images = pool.map(load, paths)
        for i, image in enumerate(tqdm(images, total=len(paths), desc="decoding images",
                                       unit="img", disable=not progress, leave=False)):
            out[i] = image
    return out


#: Bump when what a cached array holds for the same files changes (resize, crop rule).
CACHE_VERSION = 1


def _cache_key(paths: list[str], image_size: int, crop: int | None) -> str:
    """Hash of the cache format, side, crop and every file's absolute path, size and mtime."""
    digest = hashlib.sha256(f"v{CACHE_VERSION}|{int(image_size)}|{crop}".encode())
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError:
            from allnet_lib.imageio import read_image

            read_image(path)  # raises the reader's clear error (which file, what to do)
            raise
        digest.update(f"|{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:20]


def _say(show: bool, message: str) -> None:
    if show:
        print(message, flush=True)


def feed_workers(gpu: bool) -> int:
    """Threads that cut batches for :func:`array_batches` in training: a GPU eats batches faster
    than one thread cuts them; on a CPU extra threads only compete with the training itself."""
    return min(4, os.cpu_count() or 1) if gpu else 1


def _flip_probability() -> float:
    """The report's ``probability=.5`` as Augmentor really applies it (0.55), so on-the-fly
    samples follow the report's distribution (see :mod:`allnet_lib.augment`)."""
    from allnet_lib.augment import REPORT_PROBABILITY, augmentor_probability

    return augmentor_probability(REPORT_PROBABILITY)


def array_batches(x: np.ndarray, y: np.ndarray, *, batch_size: int = 32, shuffle: bool = False,
                  augment: bool = False, seed: int = 0, multiple_of: int = 1, epoch: int = 0,
                  workers: int = 1):
    """A ``keras.utils.PyDataset`` of in-memory arrays for ``model.fit`` on any backend,
    reshuffled and augmented afresh every epoch (what :func:`make_dataset` does with tf.data).
    ``x`` may be float32 in [0, 1] or uint8 (as :func:`decoded_images` gives, memory-mapped or
    not); uint8 batches are scaled to float32 [0, 1] as they are fed. ``workers`` > 1 prepares
    that many batches at once in threads (to keep a GPU fed); the batches do not depend on it.

    Reproducible: epoch ``e``'s order comes from ``(seed, e)`` and batch ``i``'s augmentation
    from ``(seed, e, i)``, whatever order Keras asks for the batches in; ``epoch`` is the first
    epoch's number (a resumed run passes the epoch it continues from).
    ``multiple_of``: every batch size is a multiple of it (the last batch is trimmed), as
    data-parallel training over that many devices needs."""
    return _array_batches_class()(x, y, batch_size=batch_size, shuffle=shuffle, augment=augment,
                                  seed=seed, multiple_of=multiple_of, epoch=epoch, workers=workers)


@functools.cache
def _array_batches_class():
    """Defined on first use so that importing this module does not import Keras (and its
    backend)."""
    import keras

    from allnet_lib.augment import random_flip_rotate

    class ArrayBatches(keras.utils.PyDataset):
        __doc__ = array_batches.__doc__

        def __init__(self, x, y, *, batch_size, shuffle, augment, seed, multiple_of, epoch=0,
                     workers=1):
            super().__init__(workers=int(workers), use_multiprocessing=False)
            if len(x) != len(y):
                raise ValueError(f"x and y differ in length: {len(x)} images, {len(y)} labels")
            if batch_size % multiple_of or len(x) < multiple_of:
                raise ValueError(f"batch size {batch_size} and {len(x)} images cannot be split "
                                 f"evenly over {multiple_of} devices; use a batch size that is a "
                                 f"multiple of {multiple_of}")
            self.x, self.y = x, np.asarray(y)
            self.shuffle, self.augment = shuffle, augment
            self._seed = int(seed) % 2**64  # numpy seed sequences take non-negative integers
            starts = range(0, len(x), batch_size)
            self._bounds = [(s, s + (min(batch_size, len(x) - s) // multiple_of) * multiple_of)
                            for s in starts]
            self._bounds = [(a, b) for a, b in self._bounds if b > a]
            self._start_epoch(int(epoch))

        def _start_epoch(self, epoch: int) -> None:
            self._epoch = epoch
            self._order = np.arange(len(self.x))
            if self.shuffle:
                np.random.default_rng([self._seed, epoch]).shuffle(self._order)

        def __len__(self) -> int:
            return len(self._bounds)

        def __getitem__(self, index: int):
            start, stop = self._bounds[index]
            rows = self._order[start:stop]
            x = np.asarray(self.x[rows])  # a copy in memory, also from a memory map
            if self.augment:
                x = random_flip_rotate(x, np.random.default_rng([self._seed, self._epoch, index]))
            if x.dtype == np.uint8:
                x = x.astype(np.float32) / np.float32(255.0)
            return x, self.y[rows]

        def on_epoch_end(self):
            self._start_epoch(self._epoch + 1)

    return ArrayBatches


# --------------------------------------------------------------------------------------------
# tf.data path
# --------------------------------------------------------------------------------------------
def fast_decodable(path: str | os.PathLike) -> bool:
    """Whether ``tf.io`` decodes this file to the same pixels as ``read_image``: 24-bit
    uncompressed BMP, 8-bit RGB PNG, JPEG without EXIF (no rotation to apply). Reads the header."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError:
        return False  # let read_image raise its clear error
    if head[:2] == b"BM" and len(head) >= 34:
        bits, compression = struct.unpack_from("<HI", head, 28)
        return bits == 24 and compression == 0
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 26:
        return head[24] == 8 and head[25] == 2
    if head[:3] == b"\xff\xd8\xff":
        return b"Exif" not in head
    return False


def make_dataset(table: pd.DataFrame, *, image_size: int, crop: int | None = DEFAULT_CROP,
                 batch_size: int = 32, shuffle: bool = False, augment: bool = False,
                 cache: bool = True, seed: int = 0):
    """A ``tf.data.Dataset`` of ``(float32 images in [0, 1], int32 y)`` batches, in table order
    unless ``shuffle``. Augmentation (the report's flips/rotations) is drawn anew every epoch."""
    import tensorflow as tf

    _check_table(table, image_size)
    paths = table["path"].astype(str).tolist()
    fast = [fast_decodable(p) for p in paths]
    plain = tf.autograph.experimental.do_not_convert  # graph code written with tf.cond already
    prepare = _tf_prepare(tf, int(image_size), crop)
    q = _flip_probability()

    def load(path, fast, y):
        return prepare(path, fast), y

    def to_float(x, y):
        return tf.cast(x, tf.float32) / 255.0, y

    def flip_rotate(xy, random_int):
        return _tf_flip_rotate(tf, xy[0], random_int, q), xy[1]

    data = tf.data.Dataset.from_tensor_slices((paths, fast, labels_of(table)))
    data = data.map(plain(load), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cache:
        data = data.cache()
    if shuffle:
        data = data.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    data = data.map(plain(to_float))
    if augment:
        noise = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        data = tf.data.Dataset.zip((data, noise)).map(plain(flip_rotate),
                                                      num_parallel_calls=tf.data.AUTOTUNE)
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _read_with_python(path) -> np.ndarray:
    from allnet_lib.imageio import read_image

    return read_image(path.decode() if isinstance(path, bytes) else str(path))


def _tf_prepare(tf, image_size: int, crop: int | None):
    """path -> uint8 (s, s, 3): decode (tf.io or read_image), 600 -> 450, crop, resize."""

    def decode(path, fast):
        def with_tf():
            image = tf.io.decode_image(tf.io.read_file(path), channels=3,
                                       expand_animations=False)
            return tf.cast(image, tf.uint8)

        def with_python():
            return tf.numpy_function(_read_with_python, [path], tf.uint8, stateful=False)

        image = tf.cond(fast, with_tf, with_python)
        image.set_shape([None, None, 3])
        return image

    def centre(image, size_h, size_w):
        height, width = tf.shape(image)[0], tf.shape(image)[1]
        top, left = (height - size_h) // 2, (width - size_w) // 2
        return image[top:top + size_h, left:left + size_w]

    crop_size_for(REFERENCE_SIDE, crop)  # validates crop

    def scaled(side):  # as allnet_lib.crop.scaled_crop_size (both round half to even)
        if crop is None:
            return side
        value = tf.cast(tf.round(crop * tf.cast(side, tf.float64) / REFERENCE_SIDE), tf.int32)
        return tf.minimum(side, value)

    def prepare(path, fast):
        image = decode(path, fast)
        shape = tf.shape(image)
        is_final = tf.logical_and(tf.equal(shape[0], FINAL_TEST_SIDE),
                                  tf.equal(shape[1], FINAL_TEST_SIDE))
        image = tf.cond(is_final, lambda: centre(image, REFERENCE_SIDE, REFERENCE_SIDE),
                        lambda: image)
        shape = tf.shape(image)
        side = scaled(tf.minimum(shape[0], shape[1]))
        image = centre(image, side, side)
        resized = tf.image.resize(image, [image_size, image_size], method="bilinear",
                                  antialias=True)
        return tf.cast(tf.round(tf.clip_by_value(resized, 0.0, 255.0)), tf.uint8)

    return prepare


def _tf_flip_rotate(tf, image, random_int, q: float):
    """The report's rotate90, rotate270, flip left-right, flip top-bottom, each with
    probability ``q``, in that order (as :func:`allnet_lib.augment.random_flip_rotate`), for one
    image in TensorFlow. Stateless draws from one random int64 per image and epoch, so a seeded
    pipeline is reproducible and every epoch sees new orientations."""
    seed = tf.stack([random_int, tf.constant(0, tf.int64)])
    coins = tf.random.stateless_uniform([4], seed=seed) < q
    image = tf.cond(coins[0], lambda: tf.image.rot90(image, 1), lambda: image)
    image = tf.cond(coins[1], lambda: tf.image.rot90(image, 3), lambda: image)
    image = tf.cond(coins[2], lambda: tf.image.flip_left_right(image), lambda: image)
    return tf.cond(coins[3], lambda: tf.image.flip_up_down(image), lambda: image)

"""Getting the real C-NMC 2019 data, from any of its public sources, into one layout.

Three sources carry the same images (see ``data_scripts/README.md``):

- **TCIA** (the original host): an archive you download (:func:`fetch_tcia`, give the package
  URL copied from :data:`TCIA_PAGE`, or a file you downloaded in a browser).
- **Kaggle** ``andrewmvd/leukemia-classification`` through ``kagglehub`` (:func:`fetch_kaggle`).
- **Hugging Face** ``dwb2023/cnmc-leukemia-2019`` (+ ``-test``), parquet files holding the image
  bytes with subject, fold and label columns (:func:`fetch_huggingface`).

Whatever the source, the result is the TCIA layout under ``allnet_lib.paths.cnmc_dir()``
(``$ALLNET_DATA/cnmc``), which :func:`allnet_lib.reader.index_dataset` reads::

    C-NMC_training_data/fold_{0,1,2}/{all,hem}/UID_*.bmp
    C-NMC_test_prelim_phase_data/1.bmp ...   + C-NMC_test_prelim_phase_data_labels.csv
    C-NMC_test_final_phase_data/*.bmp        (if the source has it)

Safety rules, because these are 10 GB downloads that fail half-way: downloads resume with HTTP
``Range`` into ``<name>.part`` and are renamed only when complete and checked (size, sha256);
archives are checked member by member *before* anything is written (absolute paths, ``..``
escapes and links pointing outside are refused); the dataset is assembled in a hidden staging
folder beside the destination and renamed into place at the end; an existing destination is
never overwritten. Network failures raise :class:`FetchError` naming the host and alternatives.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import posixpath
import re
import shutil
import stat
import sys
import tarfile
import tempfile
import time
import warnings
import zipfile
from pathlib import Path
from urllib.parse import unquote, urlparse

from .labels import parse_cnmc_name
from .paths import cnmc_dir

TCIA_PAGE = "https://www.cancerimagingarchive.net/collection/c-nmc-2019/"
KAGGLE_HANDLE = "andrewmvd/leukemia-classification"
KAGGLE_PAGE = "https://www.kaggle.com/datasets/andrewmvd/leukemia-classification"
HF_REPO = "dwb2023/cnmc-leukemia-2019"
HF_TEST_REPO = "dwb2023/cnmc-leukemia-2019-test"
HF_ENDPOINT = "https://huggingface.co"
TRAINING_DIR = "C-NMC_training_data"
PRELIM_DIR = "C-NMC_test_prelim_phase_data"
PRELIM_LABELS = "C-NMC_test_prelim_phase_data_labels.csv"
FINAL_DIR = "C-NMC_test_final_phase_data"
CHUNK = 1 << 20
#: safe_extract refuses an archive that would unpack to more than this (C-NMC is about 10 GB)
MAX_EXTRACT_BYTES = 64 << 30
#: ... or that unpacks to more than this many times its own size once it is past
#: RATIO_FLOOR_BYTES (zip bombs reach 1000x; C-NMC's BMPs of cells on black compress ~5-20x)
MAX_EXTRACT_RATIO = 100
RATIO_FLOOR_BYTES = 16 << 20

ALTERNATIVES = {
    "tcia": (
        "Alternatives: the Kaggle mirror (`fetch_cnmc.py kaggle`), the Hugging Face mirror "
        f"(`fetch_cnmc.py hf`), or download the package in a browser from {TCIA_PAGE} and pass "
        "the file with `fetch_cnmc.py tcia --archive FILE`."
    ),
    "kaggle": (
        "Alternatives: the Hugging Face mirror (`fetch_cnmc.py hf`), or download the zip in a "
        f"browser from {KAGGLE_PAGE} and pass it with `fetch_cnmc.py tcia --archive FILE` "
        "(the Kaggle layout is rearranged the same way)."
    ),
    "hf": (
        "Alternatives: the Kaggle mirror (`fetch_cnmc.py kaggle`) or the TCIA package "
        f"(`fetch_cnmc.py tcia --url URL` with the link from {TCIA_PAGE})."
    ),
}

KAGGLE_HELP = """\
To download from Kaggle:
  1. install the client:        pip install kagglehub
  2. create an API token:       https://www.kaggle.com/settings -> API -> "Create New Token"
                                (this downloads kaggle.json)
  3. give it to kagglehub, either
       - save it as ~/.kaggle/kaggle.json  (chmod 600 ~/.kaggle/kaggle.json), or
       - export KAGGLE_USERNAME=<your user name> KAGGLE_KEY=<the key from kaggle.json>
  4. run again:                  python data_scripts/fetch_cnmc.py kaggle
"""


class FetchError(RuntimeError):
    """Getting the data failed; the message names the host or file, the cause and what to do."""


def _say(message: str) -> None:
    """Progress remarks go to stderr so that stdout stays clean for results."""
    print(message, file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# downloads


def sha256sum(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (multi-GB archives fit in no memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _unreachable(url: str, error: Exception, hint: str) -> str:
    host = urlparse(url).netloc or url
    detail = str(error) if len(str(error)) <= 160 else str(error)[:160] + "..."
    return (
        f"could not reach {host} ({type(error).__name__}: {detail}). Check the internet "
        f"connection, proxy settings or the address {url}. {hint}"
    ).strip()


def _server_size(url: str, timeout: float, headers: dict) -> int | None:
    """The size of ``url`` as its server gives it (a one-byte Range request, so nothing big is
    transferred); None when the server cannot be asked or does not say."""
    import requests

    try:
        with requests.get(url, headers=dict(headers, Range="bytes=0-0"), stream=True,
                          timeout=timeout) as response:
            if response.status_code == 206:
                return _content_range_total(response.headers.get("Content-Range"))
            length = response.headers.get("Content-Length")
            if response.status_code == 200 and length and length.isdigit():
                return int(length)
    except requests.RequestException:
        return None
    return None


def _check_existing(dest: Path, sha256: str | None, size: int | None, *, url: str | None = None,
                    timeout: float = 60, headers: dict | None = None) -> Path:
    """An already complete download is reused only if it matches what is known about it. With
    neither ``size`` nor ``sha256`` the server is asked for the size: a file of another size (a
    copy cut short, a browser download of an error page) is refused, not taken as complete."""
    if size is None and not sha256:
        if url is None:
            raise FetchError(f"{dest} already exists and nothing is known to check it against; "
                             "give its sha256 or size, or delete it to download it again.")
        size = _server_size(url, timeout, headers or {})
        if size is None:
            raise FetchError(
                f"{dest} already exists, but it cannot be checked: no sha256 or size was given and "
                f"{urlparse(url).netloc or url} did not tell the file's size. Pass the expected "
                "sha256 (--sha256), or delete the file to download it again."
            )
    if size is not None and dest.stat().st_size != size:
        raise FetchError(
            f"{dest} already exists but has {dest.stat().st_size} bytes, expected {size}. "
            "Move it aside or delete it, then run again."
        )
    if sha256 and sha256sum(dest) != sha256.lower():
        raise FetchError(
            f"{dest} already exists but its sha256 differs from {sha256}. "
            "Move it aside or delete it, then run again."
        )
    _say(f"already downloaded: {dest}")
    return dest


def _content_range_total(value: str | None) -> int | None:
    match = re.match(r"bytes (?:\d+-\d+|\*)/(\d+)", value or "")
    return int(match[1]) if match else None


def _open_stream(session, url: str, part: Path, timeout: float, headers: dict):
    """GET ``url``, resuming after ``part``'s bytes; returns (response, file mode, offset, total)."""
    offset = part.stat().st_size if part.exists() else 0
    request_headers = dict(headers, **({"Range": f"bytes={offset}-"} if offset else {}))
    response = session.get(url, headers=request_headers, stream=True, timeout=timeout)
    if response.status_code == 416 and offset:
        total = _content_range_total(response.headers.get("Content-Range"))
        response.close()
        if total == offset:
            return None, "ab", offset, total  # the .part already holds everything
        _say(f"{part.name} does not match the file on the server any more: starting again")
        part.unlink()
        return _open_stream(session, url, part, timeout, headers)
    if response.status_code == 206:
        start = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
        if start and int(start[1]) == offset:
            _say(f"resuming {part.name} at {offset} bytes")
            return response, "ab", offset, _content_range_total(response.headers.get("Content-Range"))
        response.close()
        raise FetchError(f"{url}: the server answered the resume request with the wrong byte range.")
    if response.status_code == 200:
        if offset:
            _say(f"the server at {urlparse(url).netloc} does not support resuming: restarting {part.name}")
        length = response.headers.get("Content-Length")
        return response, "wb", 0, int(length) if length and length.isdigit() else None
    response.close()
    raise FetchError(
        f"{url}: the server answered HTTP {response.status_code} {response.reason}. Check the "
        "address (links copied from a web page can expire or need a login)."
    )


def _stream_into(session, url, part, *, timeout, headers, progress, label, state) -> tuple[int | None, int]:
    """One attempt: append what the server sends to ``part``. Returns (total size, bytes received).
    ``state["answered"]`` tells the caller the server was reached (so a failure is a drop)."""
    from tqdm.auto import tqdm

    response, mode, offset, total = _open_stream(session, url, part, timeout, headers)
    state["answered"] = True
    if response is None:
        return total, 0
    received = 0
    with response, open(part, mode) as handle, tqdm(
        total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
        desc=label, disable=not progress,
    ) as bar:
        for block in response.iter_content(1 << 16):
            handle.write(block)
            received += len(block)
            bar.update(len(block))
    return total, received


def _set_aside(part: Path, dest: Path, why: str) -> Path:
    """Keep a bad download for inspection instead of deleting it; the next run starts fresh."""
    bad = dest.with_name(dest.name + ".corrupt")
    os.replace(part, bad)
    raise FetchError(f"{dest.name}: {why}. The downloaded bytes were kept as {bad}; delete it and run again.")


def download(url: str, dest: str | os.PathLike, *, sha256: str | None = None, size: int | None = None,
             progress: bool = True, timeout: float = 60, retries: int = 5, hint: str = "",
             headers: dict | None = None) -> Path:
    """Download ``url`` to ``dest`` resumably and atomically; returns ``dest``.

    Bytes go to ``<dest>.part``; an interrupted run (or a dropped connection, retried up to
    ``retries`` times) continues from there with an HTTP Range request. Only a complete file
    whose size and sha256 match (when known) is renamed to ``dest``. An existing ``dest`` is
    reused if it matches (without ``size`` or ``sha256``: if its size is the server's), never
    overwritten. Failures raise :class:`FetchError`; ``hint`` is
    appended to network errors (where else to get the data).
    """
    import requests

    dest = Path(dest)
    if dest.exists():
        return _check_existing(dest, sha256, size, url=url, timeout=timeout, headers=headers)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    total = None
    with requests.Session() as session:
        for attempt in range(retries + 1):
            state = {"answered": False}
            try:
                total, received = _stream_into(session, url, part, timeout=timeout, headers=headers or {},
                                               progress=progress, label=dest.name, state=state)
            except requests.exceptions.InvalidURL as error:
                raise FetchError(f"{url} is not a valid address ({error}).") from None
            except requests.RequestException as error:
                if state["answered"] and attempt < retries:  # reached, then dropped: resume
                    _say(f"connection to {urlparse(url).netloc} dropped ({type(error).__name__}); resuming")
                    time.sleep(min(attempt, 5))
                    continue
                raise FetchError(_unreachable(url, error, hint)) from None
            have = part.stat().st_size if part.exists() else 0
            if total is None or have >= total:
                break
            if received == 0 or attempt == retries:
                raise FetchError(f"{url}: the download stopped at {have} of {total} bytes. Run again to resume.")
            _say(f"download of {dest.name} stopped at {have} of {total} bytes; resuming")
    have = part.stat().st_size if part.exists() else 0
    expected = size if size is not None else total
    if expected is not None and have != expected:
        _set_aside(part, dest, f"got {have} bytes, expected {expected}")
    if sha256:
        got = sha256sum(part)
        if got != sha256.lower():
            _set_aside(part, dest, f"sha256 mismatch: expected {sha256.lower()}, got {got}")
    os.replace(part, dest)
    return dest


# ---------------------------------------------------------------------------------------------
# safe extraction


def _clean_member(archive: Path, name: str) -> str:
    """Normalised relative path of an archive member, or FetchError if it would land outside."""
    clean = name.replace("\\", "/")
    if clean.startswith("/") or re.match(r"^[A-Za-z]:", clean):
        raise FetchError(f"{archive}: refusing member {name!r}: absolute path. "
                         "The archive is unsafe; nothing was extracted.")
    norm = posixpath.normpath(clean)
    if norm == ".." or norm.startswith("../"):
        raise FetchError(f"{archive}: refusing member {name!r}: it escapes the target folder with '..'. "
                         "The archive is unsafe; nothing was extracted.")
    return norm


def _check_link(archive: Path, name: str, target: str, hard: bool) -> None:
    """Links must point inside the extraction folder (hard-link names are archive-relative)."""
    clean = target.replace("\\", "/")
    joined = clean if hard else posixpath.join(posixpath.dirname(name), clean)
    norm = posixpath.normpath(joined)
    if clean.startswith("/") or norm == ".." or norm.startswith("../"):
        raise FetchError(f"{archive}: refusing link {name!r} -> {target!r}: it points outside the target "
                         "folder. The archive is unsafe; nothing was extracted.")


def _check_not_through_links(archive: Path, names: list[str], links: set[str]) -> None:
    """A member written 'through' a link could land anywhere the link points: refuse it."""
    for name in names:
        parts = name.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in links:
                raise FetchError(f"{archive}: refusing member {name!r}: its path goes through the link "
                                 f"{'/'.join(parts[:i])!r}. Nothing was extracted.")


def _zip_plan(archive: Path, zf: zipfile.ZipFile) -> list[tuple[zipfile.ZipInfo, str]]:
    plan, links = [], set()
    for info in zf.infolist():
        name = _clean_member(archive, info.filename)
        if stat.S_ISLNK(info.external_attr >> 16):
            _check_link(archive, name, zf.read(info).decode("utf-8", "replace"), hard=False)
            links.add(name)
            continue  # zipfile cannot create links; links that stay inside are skipped (said below)
        plan.append((info, name))
    _check_not_through_links(archive, [n for _, n in plan], links)
    if links:
        _say(f"{archive.name}: {len(links)} symbolic link(s) inside the archive not extracted: {sorted(links)[:5]}")
    return plan


def _tar_plan(archive: Path, tf: tarfile.TarFile) -> list[tarfile.TarInfo]:
    plan, links = [], set()
    for member in tf.getmembers():
        name = _clean_member(archive, member.name)
        if member.issym() or member.islnk():
            _check_link(archive, name, member.linkname, hard=member.islnk())
            links.add(name)
        elif not (member.isfile() or member.isdir()):
            raise FetchError(f"{archive}: refusing member {member.name!r}: a device or pipe, not a file. "
                             "Nothing was extracted.")
        plan.append(member)
    _check_not_through_links(archive, [_clean_member(archive, m.name) for m in plan], links)
    return plan


def _extract_zip(zf, plan, target: Path, progress: bool) -> None:
    from tqdm.auto import tqdm

    for info, name in tqdm(plan, desc=f"extracting {target.name}", unit="file", disable=not progress):
        path = target / name
        if info.is_dir():
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(info) as source, open(path, "wb") as sink:
            shutil.copyfileobj(source, sink, CHUNK)


def _extract_tar(tf, plan, target: Path, progress: bool) -> None:
    from tqdm.auto import tqdm

    for member in tqdm(plan, desc=f"extracting {target.name}", unit="file", disable=not progress):
        tf.extract(member, target, filter="data")  # a second line of defence after our checks


def _require_free(dest: Path) -> None:
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FetchError(f"{dest} already exists and is not empty: nothing was changed. Move it aside "
                         "(or delete it), or choose another destination (--dest or ALLNET_DATA).")


def _plan_bytes(plan) -> int:
    """Bytes the planned members unpack to (sizes from the archive's own index; zipfile and
    tarfile never write more than a member declares)."""
    return sum(m.file_size if isinstance(m, zipfile.ZipInfo) else m.size
               for m in (p[0] if isinstance(p, tuple) else p for p in plan))


def _check_sizes(archive: Path, dest: Path, plan, max_bytes: int | None, max_ratio: float | None) -> None:
    """Refuse an archive bomb before writing anything: too many bytes in all, far more than the
    archive's own size, or more than the free space where it would go."""
    total = _plan_bytes(plan)
    packed = max(archive.stat().st_size, 1)
    gib = 1 << 30
    if max_bytes is not None and total > max_bytes:
        raise FetchError(f"{archive}: refusing to extract {total / gib:.1f} GiB (the limit is "
                         f"{max_bytes / gib:.1f} GiB; C-NMC is about 10 GB). Nothing was extracted; if "
                         "the archive is genuine, pass a larger max_bytes.")
    if max_ratio is not None and total > RATIO_FLOOR_BYTES and total > max_ratio * packed:
        raise FetchError(f"{archive}: refusing to extract: {packed} bytes would unpack to {total} "
                         f"({total / packed:.0f} times larger; the limit is {max_ratio:g}x), the mark of an "
                         "archive bomb. Nothing was extracted; get the archive again from its source.")
    free = shutil.disk_usage(dest.parent).free
    if total > free:
        raise FetchError(f"{archive}: needs {total / gib:.1f} GiB but only {free / gib:.1f} GiB are free "
                         f"in {dest.parent}. Nothing was extracted; free some space or choose another --dest.")


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike, *, progress: bool = True,
                 max_bytes: int | None = MAX_EXTRACT_BYTES, max_ratio: float | None = MAX_EXTRACT_RATIO) -> Path:
    """Extract a zip or tar (.tar, .tar.gz, .tgz, .tar.bz2, .tar.xz) archive into ``dest``.

    Every member is checked before anything is written: absolute paths, ``..`` escapes, links
    pointing outside, paths through links and device files make the whole archive refused, and so
    does an archive bomb: more than ``max_bytes`` in all, more than ``max_ratio`` times the
    archive's size (past 16 MiB), or more than the free disk space.
    Files go to a hidden temporary sibling that is renamed to ``dest`` when complete; ``dest``
    must not exist yet (or be empty).
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise FetchError(f"{archive}: no such archive file.")
    _require_free(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        opener, planner, extractor = zipfile.ZipFile, _zip_plan, _extract_zip
    elif tarfile.is_tarfile(archive):
        opener, planner, extractor = tarfile.open, _tar_plan, _extract_tar
    else:
        raise FetchError(f"{archive}: not a zip or tar archive. If it is small, it may be an HTML error "
                         "or login page saved by the download: open it in a text editor to see.")
    with opener(archive) as handle:
        plan = planner(archive, handle)
        _check_sizes(archive, dest, plan, max_bytes, max_ratio)
        temp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.extracting-", dir=dest.parent))
        try:
            extractor(handle, plan, temp, progress)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)  # our own partial output, never user data
            raise
    if dest.exists():
        dest.rmdir()  # empty, checked above
    os.replace(temp, dest)
    return dest


# ---------------------------------------------------------------------------------------------
# rearranging into the TCIA layout


def _walk_dirs(src: Path):
    for dirpath, dirnames, _ in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__MACOSX")
        yield Path(dirpath)


def find_cnmc_parts(src: str | os.PathLike) -> dict:
    """Locate the C-NMC pieces in any layout (TCIA, nested folds, Kaggle) under ``src``.

    Returns ``{"folds": {("fold_0", "all"): Path, ...}, "prelim": Path|None,
    "prelim_csv": Path|None, "final": Path|None}``; two copies of the same piece is an error.
    """
    from .reader import _fold_for

    src = Path(src)
    parts: dict = {"folds": {}, "prelim": None, "prelim_csv": None, "final": None}

    def put(key, path, slot):
        if slot.get(key) is not None:
            raise FetchError(f"found two copies of {key}: {slot[key]} and {path}. Keep one and run again.")
        slot[key] = path

    for folder in _walk_dirs(src):
        name = folder.name.lower()
        if name in ("all", "hem"):
            fold = _fold_for(folder, src)
            if fold.startswith("fold_"):
                put((fold, name), folder, parts["folds"])
        elif name == PRELIM_DIR.lower():
            put("prelim", folder, parts)
        elif name == FINAL_DIR.lower():
            put("final", folder, parts)
        if (folder / PRELIM_LABELS).is_file():
            put("prelim_csv", folder / PRELIM_LABELS, parts)
    return parts


def _transfer(source: Path, target: Path, mode: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if mode == "move":
        shutil.move(source, target)
    elif mode == "link":
        try:
            os.link(source, target)
        except OSError:  # other file system, or links not allowed
            shutil.copy2(source, target)
    else:
        shutil.copy2(source, target)


def arrange_tcia_layout(src: str | os.PathLike, out: str | os.PathLike, *, mode: str = "copy",
                        progress: bool = True) -> int:
    """Copy (``mode="copy"``), hard-link (``"link"``) or move (``"move"``) the C-NMC pieces found
    under ``src`` into the TCIA layout under ``out``; returns the number of files placed.
    Nested ``fold_N/fold_N`` folders are flattened; Kaggle names are mapped to TCIA names."""
    from tqdm.auto import tqdm

    if mode not in ("copy", "link", "move"):
        raise ValueError(f"mode must be 'copy', 'link' or 'move', not {mode!r}")
    src, out = Path(src), Path(out)
    parts = find_cnmc_parts(src)
    if not parts["folds"] and not parts["prelim"]:
        raise FetchError(f"no C-NMC folders found under {src} (expected fold_N/all, fold_N/hem or "
                         f"{PRELIM_DIR}/). Is this the right download?")
    jobs = []
    for (fold, label), folder in sorted(parts["folds"].items()):
        jobs += [(f, out / TRAINING_DIR / fold / label / f.name) for f in sorted(folder.iterdir()) if f.is_file()]
    for key, name in (("prelim", PRELIM_DIR), ("final", FINAL_DIR)):
        if parts[key]:
            jobs += [(f, out / name / f.name) for f in sorted(parts[key].iterdir()) if f.is_file()]
    if parts["prelim_csv"]:
        jobs.append((parts["prelim_csv"], out / PRELIM_LABELS))
    for source, target in tqdm(jobs, desc="arranging files", unit="file", disable=not progress):
        _transfer(source, target, mode)
    return len(jobs)


def _install(staged: Path, dest: Path) -> Path:
    """Rename the finished staging folder to ``dest`` (same file system, so it is atomic)."""
    _require_free(dest)
    if dest.exists():
        dest.rmdir()
    os.replace(staged, dest)
    return dest


def _staging(dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{dest.name}.staging-", dir=dest.parent))


@contextlib.contextmanager
def _staged_install(dest: Path):
    """A temporary folder next to ``dest``: the block builds the data in ``<it>/cnmc``, which is
    installed as ``dest`` when the block ends without an error; the folder is always removed, so
    an interrupted fetch leaves nothing that looks complete."""
    staging = _staging(dest)
    try:
        yield staging
        _install(staging / "cnmc", dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # only our temporary folder


# ---------------------------------------------------------------------------------------------
# TCIA


def _archive_name(url: str, index: int) -> str:
    name = Path(unquote(urlparse(url).path)).name
    return name if re.match(r"^[\w.() -]+$", name or "") else f"tcia-package-{index}.zip"


def fetch_tcia(urls=None, *, archives=None, dest=None, sha256: str | None = None,
               download_dir=None, progress: bool = True) -> Path:
    """Download (or take local) TCIA package archive(s) and install them as the TCIA layout.

    ``urls``: one URL or a list (copy the package link from :data:`TCIA_PAGE`); ``archives``:
    archive files you downloaded yourself (a Kaggle zip works too). ``sha256`` checks a single
    download. Archives are kept in ``download_dir`` (default ``<dest>/../downloads``).
    """
    urls = [urls] if isinstance(urls, str) else list(urls or [])
    archives = [Path(a) for a in ([archives] if isinstance(archives, (str, os.PathLike)) else archives or [])]
    if not urls and not archives:
        raise FetchError(
            "TCIA needs the package address: open " + TCIA_PAGE + ", copy the link of the image "
            "package and pass it with --url, or download it in a browser and pass --archive FILE. "
            + ALTERNATIVES["tcia"].replace("Alternatives", "Or use")
        )
    if sha256 and len(urls) != 1:
        raise FetchError("--sha256 checks a single download; give exactly one --url with it.")
    dest = Path(dest) if dest else cnmc_dir()
    _require_free(dest)
    download_dir = Path(download_dir) if download_dir else dest.parent / "downloads"
    for i, url in enumerate(urls):
        archives.append(download(url, download_dir / _archive_name(url, i), sha256=sha256,
                                 progress=progress, hint=ALTERNATIVES["tcia"]))
    with _staged_install(dest) as staging:
        for i, archive in enumerate(archives):
            safe_extract(archive, staging / "extracted" / f"archive_{i}", progress=progress)
        arrange_tcia_layout(staging / "extracted", staging / "cnmc", mode="move", progress=progress)
    _say(f"C-NMC installed in {dest}; the archives stay in {download_dir} (delete them to save space)")
    return dest


# ---------------------------------------------------------------------------------------------
# Kaggle


def _kaggle_error(error: Exception) -> FetchError:
    text = f"{type(error).__name__}: {error}"
    if re.search(r"\b(401|403)\b|unauthori|forbidden|credential|authenticat|kaggle\.json|api key", text, re.I):
        return FetchError(f"Kaggle refused the download ({text[:200]}): no valid API token.\n{KAGGLE_HELP}")
    if re.search(r"connect|resolve|timed? ?out|network|unreachable|name or service", text, re.I):
        return FetchError(_unreachable("https://www.kaggle.com", error, ALTERNATIVES["kaggle"]))
    return FetchError(f"kagglehub failed: {text[:300]}. {ALTERNATIVES['kaggle']}")


def fetch_kaggle(dest=None, *, handle: str = KAGGLE_HANDLE, mode: str = "copy", progress: bool = True) -> Path:
    """Download the Kaggle mirror with ``kagglehub`` and install it in the TCIA layout.

    kagglehub keeps its own cache (``~/.cache/kagglehub``); ``mode="link"`` hard-links from it
    instead of copying (saves about 10 GB when both are on one disk). Missing kagglehub or
    credentials give a FetchError with step-by-step instructions.
    """
    dest = Path(dest) if dest else cnmc_dir()
    _require_free(dest)
    try:
        import kagglehub
    except ImportError:
        raise FetchError("the Kaggle client `kagglehub` is not installed.\n" + KAGGLE_HELP) from None
    try:
        source = Path(kagglehub.dataset_download(handle))
    except Exception as error:  # kagglehub raises many types; all mean "no data"
        raise _kaggle_error(error) from None
    with _staged_install(dest) as staging:
        arrange_tcia_layout(source, staging / "cnmc", mode=mode, progress=progress)
    _say(f"C-NMC installed in {dest} (kagglehub's copy stays in {source})")
    return dest


# ---------------------------------------------------------------------------------------------
# Hugging Face parquet mirror


def _hf_headers() -> dict:
    token = os.environ.get("HF_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def list_hf_parquet(repo: str, *, revision: str = "main", endpoint: str | None = None,
                    timeout: float = 60) -> list[dict]:
    """The parquet files of a Hugging Face dataset repo: ``[{"path", "size", "sha256"}]``."""
    import requests

    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or HF_ENDPOINT).rstrip("/")
    url = f"{endpoint}/api/datasets/{repo}/tree/{revision}?recursive=true"
    try:
        response = requests.get(url, headers=_hf_headers(), timeout=timeout)
    except requests.RequestException as error:
        raise FetchError(_unreachable(url, error, ALTERNATIVES["hf"])) from None
    if response.status_code != 200:
        raise FetchError(f"{url}: HTTP {response.status_code}: cannot list the files of {repo}. "
                         f"Check the repository name. {ALTERNATIVES['hf']}")
    files = [
        {"path": e["path"], "size": (e.get("lfs") or {}).get("size", e.get("size")),
         "sha256": (e.get("lfs") or {}).get("oid")}
        for e in response.json() if e.get("type") == "file" and e["path"].endswith(".parquet")
    ]
    if not files:
        raise FetchError(f"{repo} has no parquet files at revision {revision}. {ALTERNATIVES['hf']}")
    return sorted(files, key=lambda f: f["path"])


def _download_hf(repo, revision, endpoint, download_dir: Path, progress) -> list[Path]:
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or HF_ENDPOINT).rstrip("/")
    paths = []
    for entry in list_hf_parquet(repo, revision=revision, endpoint=endpoint):
        url = f"{endpoint}/datasets/{repo}/resolve/{revision}/{entry['path']}"
        target = download_dir / repo.replace("/", "__") / entry["path"]
        paths.append(download(url, target, sha256=entry["sha256"], size=entry["size"], progress=progress,
                              hint=ALTERNATIVES["hf"], headers=_hf_headers()))
    return paths


_LABEL_WORDS = {"all": "all", "cancer": "all", "leukemia": "all", "blast": "all",
                "hem": "hem", "healthy": "hem", "normal": "hem"}


def _class_names(schema) -> dict[str, list[str]]:
    """ClassLabel names stored by the ``datasets`` library in the parquet schema metadata."""
    meta = (schema.metadata or {}).get(b"huggingface")
    if not meta:
        return {}
    features = json.loads(meta).get("info", {}).get("features", {})
    return {k: v["names"] for k, v in features.items() if isinstance(v, dict) and "names" in v}


def _row_label(row: dict, names: dict) -> str | None:
    for column in ("class_label", "label", "labels"):
        value = row.get(column)
        if isinstance(value, int) and column in names:
            value = names[column][value]
        if isinstance(value, str) and value.strip().lower() in _LABEL_WORDS:
            return _LABEL_WORDS[value.strip().lower()]
    return None


def _row_name(row: dict, label: str | None) -> str | None:
    """The first valid C-NMC file name a row offers: a name column, else subject/image/cell."""
    candidates = [posixpath.basename(str(row[c]).replace("\\", "/"))
                  for c in ("original_image_name", "relative_file_path", "Patient_ID", "file_name")
                  if row.get(c)]
    subject, image, cell = row.get("subject_id"), row.get("image_number"), row.get("cell_count")
    if label and None not in (subject, image, cell):
        candidates.append(f"UID_{subject}_{image}_{cell}_{label}.bmp")
    for candidate in candidates:
        try:
            parse_cnmc_name(Path(candidate).stem + ".bmp")
            return Path(candidate).stem + ".bmp"
        except ValueError:
            continue
    return None


def _row_fold(row: dict) -> str | None:
    fold = row.get("fold")
    if fold is not None and str(fold).strip() != "":
        match = re.match(r"^(?:fold_?)?(\d+)$", str(fold).strip(), re.I)
        return f"fold_{int(match[1])}" if match else None
    first = str(row.get("relative_file_path") or "").replace("\\", "/").split("/")[0]
    match = re.match(r"^fold_?(\d+)$", first, re.I)
    return f"fold_{int(match[1])}" if match else None


def _image_bytes(value) -> bytes | None:
    if isinstance(value, dict):
        value = value.get("bytes")
    return bytes(value) if value else None


def _write_bmp(data: bytes, path: Path) -> None:
    """BMP bytes are written as they are; any other format is decoded and saved as BMP."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if data[:2] == b"BM":
        path.write_bytes(data)
        return
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.convert("RGB").save(path, format="BMP")


def _convert_row(row, names, out: Path, test: bool, counter: list) -> tuple[str, str, str] | str:
    """Write one parquet row; returns (relative path, original name, label) or a skip reason."""
    label = _row_label(row, names)
    original = _row_name(row, label)
    if original is None:
        return ("no C-NMC file name (columns original_image_name/relative_file_path, or subject_id + "
                f"image_number + cell_count + label): {({k: v for k, v in row.items() if k != 'image'})!r:.200}")
    name = parse_cnmc_name(original)
    if label is not None and name.label != label:
        return f"{original}: the name says {name.label!r} but the label column says {label!r}"
    label = name.label
    data = _image_bytes(row.get("image"))
    if not data:
        return f"{original}: no image bytes"
    if test:
        counter[0] += 1
        rel = f"{PRELIM_DIR}/{counter[0]}.bmp"
    else:
        fold = _row_fold(row)
        if fold is None:
            return f"{original}: no fold (columns fold / relative_file_path)"
        rel = f"{TRAINING_DIR}/{fold}/{label}/{original}"
        if (out / rel).exists():
            return f"{original}: appears twice in {fold}; the first copy was kept"
    try:
        _write_bmp(data, out / rel)
    except OSError as error:
        return f"{original}: image bytes cannot be decoded ({error})"
    return rel, original, label


def parquet_to_tcia(parquet_files, out: str | os.PathLike, *, test_files=(), progress: bool = True):
    """Write the images stored in Hugging Face parquet files as BMP files in the TCIA layout.

    ``parquet_files`` (training rows: label, fold and file name or subject/image/cell columns)
    go to ``C-NMC_training_data/fold_N/<label>/``; ``test_files`` (the preliminary test) go to
    ``C-NMC_test_prelim_phase_data/<n>.bmp`` with the labels CSV, as TCIA ships them. Rows that
    cannot be used are skipped with one warning listing how many and why. Returns a DataFrame
    ``path, filename, label`` of the files written.
    """
    import pandas as pd
    import pyarrow.parquet as pq
    from tqdm.auto import tqdm

    out = Path(out)
    written, skipped, counter = [], [], [0]
    jobs = [(Path(p), False) for p in parquet_files] + [(Path(p), True) for p in test_files]
    for path, test in jobs:
        source = pq.ParquetFile(path)
        names = _class_names(source.schema_arrow)
        with tqdm(total=source.metadata.num_rows, desc=f"writing {path.name}", unit="img",
                  disable=not progress) as bar:
            for batch in source.iter_batches(batch_size=64):
                for row in batch.to_pylist():
                    result = _convert_row(row, names, out, test, counter)
                    (skipped if isinstance(result, str) else written).append(result)
                    bar.update(1)
    if skipped:
        warnings.warn(f"{len(skipped)} parquet rows skipped, e.g. {skipped[:3]}", stacklevel=2)
    prelim = [(Path(rel).name, original, label) for rel, original, label in written
              if rel.startswith(PRELIM_DIR)]
    if prelim:
        table = pd.DataFrame([(o, n, int(l == "all")) for n, o, l in prelim],
                             columns=["Patient_ID", "new_names", "labels"])
        table.to_csv(out / PRELIM_LABELS, index=False)
    return pd.DataFrame([(str(out / rel), original, label) for rel, original, label in written],
                        columns=["path", "filename", "label"])


def fetch_huggingface(dest=None, *, repo: str = HF_REPO, test_repo: str | None = HF_TEST_REPO,
                      revision: str = "main", endpoint: str | None = None, download_dir=None,
                      progress: bool = True) -> Path:
    """Download the Hugging Face parquet mirror and write it out as BMP files in the TCIA layout.

    ``test_repo=None`` skips the preliminary test set. ``endpoint`` (or ``$HF_ENDPOINT``) points
    at a mirror; ``$HF_TOKEN`` is sent if set. The parquet files stay in ``download_dir``.
    """
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise FetchError("reading the Hugging Face files needs pyarrow: pip install pyarrow "
                         "(or pip install 'allnet[fetch]').") from None
    dest = Path(dest) if dest else cnmc_dir()
    _require_free(dest)
    download_dir = Path(download_dir) if download_dir else dest.parent / "downloads"
    train = _download_hf(repo, revision, endpoint, download_dir, progress)
    test = _download_hf(test_repo, revision, endpoint, download_dir, progress) if test_repo else []
    with _staged_install(dest) as staging:
        parquet_to_tcia(train, staging / "cnmc", test_files=test, progress=progress)
    _say(f"C-NMC installed in {dest}; the parquet files stay in {download_dir} (delete them to save space)")
    return dest


# ---------------------------------------------------------------------------------------------
# command line (data_scripts/fetch_cnmc.py)


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``data_scripts/fetch_cnmc.py``."""
    parser = argparse.ArgumentParser(
        prog="fetch_cnmc.py",
        description="Get the C-NMC 2019 leukemia cell images into $ALLNET_DATA/cnmc (TCIA layout), "
                    "from TCIA, Kaggle or Hugging Face. See data_scripts/README.md.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dest", help="target folder (default: $ALLNET_DATA/cnmc, now %(default)s)",
                        default=str(cnmc_dir()))
    common.add_argument("--download-dir", help="where archives/parquet files are kept (default: DEST/../downloads)")
    common.add_argument("--no-progress", action="store_true", help="no progress bars")
    common.add_argument("--no-index", action="store_true", help="do not index and summarise the result")
    sub = parser.add_subparsers(dest="source", required=True, metavar="SOURCE")
    tcia = sub.add_parser("tcia", parents=[common], help="TCIA package archive (URL or local file)")
    tcia.add_argument("--url", action="append", default=[], help=f"package URL from {TCIA_PAGE} (repeatable)")
    tcia.add_argument("--archive", action="append", default=[], help="an archive already downloaded (repeatable)")
    tcia.add_argument("--sha256", help="expected sha256 of the single --url download")
    kaggle = sub.add_parser("kaggle", parents=[common], help=f"Kaggle mirror {KAGGLE_HANDLE} (needs kagglehub)")
    kaggle.add_argument("--handle", default=KAGGLE_HANDLE, help="Kaggle dataset handle")
    kaggle.add_argument("--link", action="store_true", help="hard-link files from kagglehub's cache instead of copying")
    hf = sub.add_parser("hf", parents=[common], help=f"Hugging Face parquet mirror {HF_REPO}")
    hf.add_argument("--repo", default=HF_REPO)
    hf.add_argument("--test-repo", default=HF_TEST_REPO, help="preliminary-test repo")
    hf.add_argument("--no-test", action="store_true", help="skip the preliminary test set")
    hf.add_argument("--revision", default="main")
    hf.add_argument("--endpoint", default=None, help="Hugging Face endpoint (default $HF_ENDPOINT or huggingface.co)")
    return parser


def _run(args) -> Path:
    progress = not args.no_progress
    if args.source == "tcia":
        return fetch_tcia(args.url, archives=args.archive, dest=args.dest, sha256=args.sha256,
                          download_dir=args.download_dir, progress=progress)
    if args.source == "kaggle":
        return fetch_kaggle(args.dest, handle=args.handle, mode="link" if args.link else "copy",
                            progress=progress)
    return fetch_huggingface(args.dest, repo=args.repo, test_repo=None if args.no_test else args.test_repo,
                             revision=args.revision, endpoint=args.endpoint,
                             download_dir=args.download_dir, progress=progress)


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done, 1 fetching failed (message on stderr), 2 bad arguments."""
    args = build_parser().parse_args(argv)
    try:
        dest = _run(args)
    except FetchError as error:
        print(f"fetch_cnmc.py {args.source}: error: {error}", file=sys.stderr)
        return 1
    if not args.no_index:
        from .reader import index_dataset

        index = index_dataset(dest, progress=not args.no_progress)
        print(index.report())
        print(index.summary().to_string(index=False))
    return 0

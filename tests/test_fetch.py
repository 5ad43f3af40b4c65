"""allnet_lib.fetch on local fixtures: a 127.0.0.1 HTTP server (Range, dropped connections,
wrong hashes), hostile archives, a fake kagglehub module and small parquet files in the
Hugging Face mirror's format. Nothing here touches the internet."""

import hashlib
import io
import json
import re
import socket
import subprocess
import sys
import tarfile
import threading
import types
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cnmc_fixtures import cell_array, found, image_bytes, make_kaggle, make_tcia

from allnet_lib import fetch
from allnet_lib.fetch import FetchError, download, fetch_huggingface, fetch_kaggle, fetch_tcia, safe_extract
from allnet_lib.imageio import read_image
from allnet_lib.reader import index_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA = bytes(range(256)) * 1200  # 300 KiB of known bytes (several 64 KiB download blocks)


# ---------------------------------------------------------------------------------------------
# a tiny local HTTP server


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server API)
        server = self.server
        server.log.append((self.path, self.headers.get("Range")))
        body = server.files.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        if isinstance(body, (list, dict)):
            body = json.dumps(body).encode()
        status, headers = 200, {}
        wanted = self.headers.get("Range")
        if wanted and server.ranges:
            start = int(re.match(r"bytes=(\d+)-", wanted)[1])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.end_headers()
                return
            status, headers = 206, {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"}
            body = body[start:]
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = server.cut_after.pop(self.path, None)
        self.wfile.write(body if cut is None else body[:cut])  # a cut drops the connection early

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.log, httpd.cut_after, httpd.ranges = {}, [], {}, True
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ---------------------------------------------------------------------------------------------
# download


def test_download_checks_the_hash_and_leaves_no_part_file(server, tmp_path):
    server.files["/pkg.zip"] = DATA
    dest = download(f"{server.url}/pkg.zip", tmp_path / "dl" / "pkg.zip", sha256=_sha(DATA), progress=False)
    assert dest.read_bytes() == DATA
    assert sorted(p.name for p in dest.parent.iterdir()) == ["pkg.zip"]
    assert server.log == [("/pkg.zip", None)]


def test_download_resumes_an_interrupted_part_file(server, tmp_path):
    server.files["/pkg.zip"] = DATA
    dest = tmp_path / "pkg.zip"
    (tmp_path / "pkg.zip.part").write_bytes(DATA[:4000])
    download(f"{server.url}/pkg.zip", dest, sha256=_sha(DATA), progress=False)
    assert dest.read_bytes() == DATA
    assert server.log == [("/pkg.zip", "bytes=4000-")]


def test_a_dropped_connection_is_resumed_in_the_same_call(server, tmp_path, capsys):
    server.files["/pkg.zip"] = DATA
    server.cut_after["/pkg.zip"] = 200_000
    dest = download(f"{server.url}/pkg.zip", tmp_path / "pkg.zip", sha256=_sha(DATA), progress=False)
    assert dest.read_bytes() == DATA
    (first, first_range), (second, second_range) = server.log
    assert first_range is None
    assert 0 < int(re.match(r"bytes=(\d+)-$", second_range)[1]) <= 200_000  # only the rest was sent
    assert "resuming" in capsys.readouterr().err


def test_a_server_without_range_support_restarts_cleanly(server, tmp_path):
    server.files["/pkg.zip"] = DATA
    server.ranges = False
    (tmp_path / "pkg.zip.part").write_bytes(b"stale bytes from another file")
    dest = download(f"{server.url}/pkg.zip", tmp_path / "pkg.zip", progress=False)
    assert dest.read_bytes() == DATA


def test_a_complete_part_file_is_finished_without_downloading_again(server, tmp_path):
    server.files["/pkg.zip"] = DATA
    (tmp_path / "pkg.zip.part").write_bytes(DATA)
    download(f"{server.url}/pkg.zip", tmp_path / "pkg.zip", sha256=_sha(DATA), progress=False)
    assert (tmp_path / "pkg.zip").read_bytes() == DATA


def test_a_hash_mismatch_keeps_nothing_under_the_final_name(server, tmp_path):
    server.files["/pkg.zip"] = DATA
    with pytest.raises(FetchError, match="sha256 mismatch") as error:
        download(f"{server.url}/pkg.zip", tmp_path / "pkg.zip", sha256="0" * 64, progress=False)
    assert not (tmp_path / "pkg.zip").exists() and not (tmp_path / "pkg.zip.part").exists()
    assert (tmp_path / "pkg.zip.corrupt").read_bytes() == DATA  # kept for inspection, not deleted
    assert "pkg.zip.corrupt" in str(error.value)


def test_a_size_mismatch_is_refused(server, tmp_path):
    server.files["/pkg.zip"] = DATA
    with pytest.raises(FetchError, match=f"got {len(DATA)} bytes, expected 99"):
        download(f"{server.url}/pkg.zip", tmp_path / "pkg.zip", size=99, progress=False)
    assert not (tmp_path / "pkg.zip").exists()


def test_an_existing_download_is_reused_only_if_it_matches(server, tmp_path):
    dest = tmp_path / "pkg.zip"
    dest.write_bytes(DATA)
    download(f"{server.url}/pkg.zip", dest, sha256=_sha(DATA), progress=False)
    assert server.log == []
    with pytest.raises(FetchError, match="already exists but its sha256 differs"):
        download(f"{server.url}/pkg.zip", dest, sha256="1" * 64, progress=False)
    assert dest.read_bytes() == DATA  # never overwritten


def test_http_errors_name_the_address_and_status(server, tmp_path):
    with pytest.raises(FetchError, match=r"/missing.zip: the server answered HTTP 404"):
        download(f"{server.url}/missing.zip", tmp_path / "x.zip", progress=False)


def test_an_unreachable_host_gives_a_message_with_alternatives(tmp_path):
    port = _closed_port()
    with pytest.raises(FetchError) as error:
        download(f"http://127.0.0.1:{port}/pkg.zip", tmp_path / "x.zip", progress=False,
                 hint=fetch.ALTERNATIVES["tcia"])
    message = str(error.value)
    assert f"could not reach 127.0.0.1:{port}" in message and "Kaggle mirror" in message
    assert error.value.__cause__ is None  # a message, not a chained traceback


# ---------------------------------------------------------------------------------------------
# safe extraction


def _zip(path: Path, members: dict) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _tar(path: Path, members: list[tarfile.TarInfo], data: dict | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info in members:
            payload = (data or {}).get(info.name, b"")
            info.size = len(payload) if info.isfile() else 0
            tf.addfile(info, io.BytesIO(payload) if info.isfile() else None)
    return path


def _link(name: str, target: str, kind=tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def test_a_dotdot_member_is_refused_and_nothing_is_written_outside(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    archive = _zip(tmp_path / "evil.zip", {"fold_0/all/UID_1_1_1_all.bmp": b"ok", "../evil.txt": b"pwned"})
    with pytest.raises(FetchError, match=r"'\.\./evil\.txt'.*escapes"):
        safe_extract(archive, work / "out", progress=False)
    assert not (tmp_path / "evil.txt").exists() and not (work / "evil.txt").exists()
    assert list(work.iterdir()) == []  # not even the good member or a temporary folder


@pytest.mark.parametrize(
    "member, reason",
    [
        (tarfile.TarInfo("/tmp/abs_evil.txt"), "absolute path"),
        (tarfile.TarInfo("a/../../evil.txt"), "escapes"),
        (_link("link", "../../outside"), "points outside"),
        (_link("etc", "/etc/passwd"), "points outside"),
        (_link("hard", "../x", tarfile.LNKTYPE), "points outside"),
        (_link("dev", "", tarfile.CHRTYPE), "device"),
    ],
)
def test_hostile_tar_members_are_refused(tmp_path, member, reason):
    archive = _tar(tmp_path / "evil.tar.gz", [tarfile.TarInfo("good.txt"), member], {"good.txt": b"x"})
    (tmp_path / "work").mkdir()
    with pytest.raises(FetchError, match=reason):
        safe_extract(archive, tmp_path / "work" / "out", progress=False)
    assert list((tmp_path / "work").iterdir()) == []
    assert not Path("/tmp/abs_evil.txt").exists()


def test_members_written_through_a_link_are_refused(tmp_path):
    members = [tarfile.TarInfo("sub/"), _link("a", "sub"), tarfile.TarInfo("a/file.txt")]
    members[0].type = tarfile.DIRTYPE
    archive = _tar(tmp_path / "through.tar.gz", members, {"a/file.txt": b"x"})
    with pytest.raises(FetchError, match="goes through the link"):
        safe_extract(archive, tmp_path / "out", progress=False)


def test_a_zip_symlink_pointing_outside_is_refused(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("data/link")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "../../etc")
    with pytest.raises(FetchError, match="points outside"):
        safe_extract(archive, tmp_path / "out", progress=False)


def test_good_archives_extract_atomically(tmp_path):
    zipped = _zip(tmp_path / "ok.zip", {"a/b.txt": b"zip", "c.txt": b"c"})
    out = safe_extract(zipped, tmp_path / "from_zip", progress=False)
    assert (out / "a" / "b.txt").read_bytes() == b"zip"
    tarred = _tar(tmp_path / "ok.tar.gz", [tarfile.TarInfo("a/b.txt")], {"a/b.txt": b"tar"})
    assert (safe_extract(tarred, tmp_path / "from_tar", progress=False) / "a" / "b.txt").read_bytes() == b"tar"
    assert _leftovers(tmp_path) == []
    with pytest.raises(FetchError, match="already exists and is not empty"):
        safe_extract(zipped, tmp_path / "from_zip", progress=False)
    (tmp_path / "page.zip").write_text("<html>login</html>")
    with pytest.raises(FetchError, match="not a zip or tar"):
        safe_extract(tmp_path / "page.zip", tmp_path / "x", progress=False)


# ---------------------------------------------------------------------------------------------
# TCIA


def _zip_tree(root: Path, archive: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                zf.write(path, prefix + path.relative_to(root).as_posix())
    return archive


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    root = tmp_path / "allnet_data"
    monkeypatch.setenv("ALLNET_DATA", str(root))
    return root


def test_fetch_tcia_downloads_extracts_and_installs_the_tcia_layout(server, tmp_path, data_root):
    fake = make_tcia(tmp_path / "src", nested=True)  # a mirror with fold_0/fold_0/all
    archive = _zip_tree(fake.root, tmp_path / "C-NMC_Leukemia.zip", prefix="C-NMC_Leukemia/")
    server.files["/files/C-NMC_Leukemia.zip"] = archive.read_bytes()
    dest = fetch_tcia(f"{server.url}/files/C-NMC_Leukemia.zip", sha256=_sha(archive.read_bytes()), progress=False)
    assert dest == data_root / "cnmc"
    assert (dest / "C-NMC_training_data" / "fold_0" / "all").is_dir()  # nesting flattened
    index = index_dataset(dest, progress=False)
    assert index.problems.empty and len(index.unlabelled) == fake.n_final
    pd.testing.assert_frame_equal(found(index.table), fake.expected)
    assert (data_root / "downloads" / "C-NMC_Leukemia.zip").is_file()  # kept, not deleted
    assert _leftovers(data_root) == []  # no staging folder left behind


def test_fetch_tcia_takes_a_local_kaggle_zip(tmp_path, data_root):
    fake = make_kaggle(tmp_path / "src")
    archive = _zip_tree(fake.root, tmp_path / "archive.zip")
    dest = fetch_tcia(archives=[archive], progress=False)
    index = index_dataset(dest, progress=False)
    pd.testing.assert_frame_equal(found(index.table), fake.expected)
    assert sorted(p.name for p in dest.iterdir()) == [
        "C-NMC_test_final_phase_data", "C-NMC_test_prelim_phase_data",
        "C-NMC_test_prelim_phase_data_labels.csv", "C-NMC_training_data"]


def test_fetch_tcia_refuses_an_existing_destination_before_downloading(server, data_root):
    (data_root / "cnmc").mkdir(parents=True)
    (data_root / "cnmc" / "mine.txt").write_text("keep me")
    with pytest.raises(FetchError, match="already exists and is not empty"):
        fetch_tcia(f"{server.url}/pkg.zip", progress=False)
    assert server.log == [] and (data_root / "cnmc" / "mine.txt").read_text() == "keep me"


def test_fetch_tcia_without_an_address_explains_where_to_get_one(data_root):
    with pytest.raises(FetchError, match=re.escape(fetch.TCIA_PAGE)):
        fetch_tcia(progress=False)


def test_an_archive_without_cnmc_folders_is_reported(tmp_path, data_root):
    archive = _zip(tmp_path / "other.zip", {"cats/cat1.jpg": b"x"})
    with pytest.raises(FetchError, match="no C-NMC folders found"):
        fetch_tcia(archives=[archive], progress=False)
    assert not (data_root / "cnmc").exists() and _leftovers(data_root) == []


# ---------------------------------------------------------------------------------------------
# Kaggle


def _fake_kagglehub(monkeypatch, behaviour):
    module = types.ModuleType("kagglehub")
    module.calls = []

    def dataset_download(handle, *args, **kwargs):
        module.calls.append(handle)
        return behaviour()

    module.dataset_download = dataset_download
    monkeypatch.setitem(sys.modules, "kagglehub", module)
    return module


def test_fetch_kaggle_rearranges_kaggle_names_into_tcia(tmp_path, data_root, monkeypatch):
    fake = make_kaggle(tmp_path / "kaggle_cache")
    module = _fake_kagglehub(monkeypatch, lambda: str(fake.root))
    dest = fetch_kaggle(progress=False)
    assert module.calls == ["andrewmvd/leukemia-classification"]
    index = index_dataset(dest, progress=False)
    assert index.problems.empty and len(index.unlabelled) == fake.n_final
    pd.testing.assert_frame_equal(found(index.table), fake.expected)
    assert any(fake.root.rglob("UID_1_1_1_all.bmp"))  # kagglehub's cache is left alone


def test_fetch_kaggle_can_hard_link(tmp_path, data_root, monkeypatch):
    fake = make_kaggle(tmp_path / "kaggle_cache")
    _fake_kagglehub(monkeypatch, lambda: str(fake.root))
    dest = fetch_kaggle(mode="link", progress=False)
    target = dest / "C-NMC_training_data" / "fold_0" / "all" / "UID_1_1_1_all.bmp"
    source = next(fake.root.rglob("UID_1_1_1_all.bmp"))
    assert target.stat().st_ino == source.stat().st_ino


def test_missing_kagglehub_prints_install_and_token_steps(data_root, monkeypatch):
    monkeypatch.setitem(sys.modules, "kagglehub", None)  # import fails
    with pytest.raises(FetchError) as error:
        fetch_kaggle(progress=False)
    message = str(error.value)
    for step in ("pip install kagglehub", "kaggle.com/settings", "~/.kaggle/kaggle.json",
                 "KAGGLE_USERNAME", "KAGGLE_KEY"):
        assert step in message


def test_kaggle_without_credentials_prints_token_steps(data_root, monkeypatch):
    def refuse():
        raise RuntimeError("401 Client Error: Unauthorized for url: https://www.kaggle.com/api/v1/...")

    _fake_kagglehub(monkeypatch, refuse)
    with pytest.raises(FetchError, match=r"no valid API token(.|\n)*KAGGLE_KEY"):
        fetch_kaggle(progress=False)


def test_kaggle_unreachable_names_the_host_and_alternatives(data_root, monkeypatch):
    def offline():
        raise ConnectionError("Failed to resolve 'www.kaggle.com'")

    _fake_kagglehub(monkeypatch, offline)
    with pytest.raises(FetchError, match=r"could not reach www\.kaggle\.com(.|\n)*Hugging Face mirror"):
        fetch_kaggle(progress=False)
    assert not (data_root / "cnmc").exists()


# ---------------------------------------------------------------------------------------------
# Hugging Face parquet mirror


def _hf_rows(fake_root: Path) -> tuple[list[dict], list[dict]]:
    """Rows like dwb2023/cnmc-leukemia-2019(-test), with the original BMP bytes."""
    train = []
    for path in sorted((fake_root / "C-NMC_training_data").rglob("*.bmp")):
        subject, image, cell, cls = path.stem.split("_")[1:]
        fold = path.parent.parent.name
        train.append(dict(subject_id=subject, image_number=int(image), cell_count=int(cell),
                          image={"bytes": path.read_bytes(), "path": path.name},
                          label="cancer" if cls == "all" else "healthy", class_label=cls,
                          fold=int(fold[-1]), original_image_name=path.name,
                          relative_file_path=f"{fold}/{cls}/{path.name}"))
    labels = pd.read_csv(fake_root / "C-NMC_test_prelim_phase_data_labels.csv")
    test = [dict(image={"bytes": (fake_root / "C-NMC_test_prelim_phase_data" / new).read_bytes(), "path": new},
                 label="cancer" if y else "healthy", original_image_name=original)
            for original, new, y in labels.itertuples(index=False)]
    return train, test


def _parquet_bytes(rows: list[dict]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer)
    return buffer.getvalue()


def _serve_hf(server, repo: str, files: dict[str, bytes]) -> None:
    listing = [{"type": "directory", "path": "data"}, {"type": "file", "path": ".gitattributes", "size": 3}]
    for name, data in files.items():
        listing.append({"type": "file", "path": name, "size": len(data),
                        "lfs": {"oid": _sha(data), "size": len(data)}})
        server.files[f"/datasets/{repo}/resolve/main/{name}"] = data
    server.files[f"/api/datasets/{repo}/tree/main?recursive=true"] = listing


def test_fetch_huggingface_writes_bmp_files_in_the_tcia_layout(server, tmp_path, data_root):
    fake = make_tcia(tmp_path / "src", final=False)
    train, test = _hf_rows(fake.root)
    _serve_hf(server, fetch.HF_REPO, {"data/train-00000-of-00002.parquet": _parquet_bytes(train[:9]),
                                      "data/train-00001-of-00002.parquet": _parquet_bytes(train[9:])})
    _serve_hf(server, fetch.HF_TEST_REPO, {"data/test-00000-of-00001.parquet": _parquet_bytes(test)})
    dest = fetch_huggingface(endpoint=server.url, progress=False)
    index = index_dataset(dest, verify=True, progress=False)
    assert index.problems.empty and index.normalised == {"h3": 3}
    pd.testing.assert_frame_equal(found(index.table), fake.expected)
    original = fake.root / "C-NMC_training_data" / "fold_2" / "hem" / "UID_h3_1_1_hem.bmp"
    written = dest / "C-NMC_training_data" / "fold_2" / "hem" / "UID_h3_1_1_hem.bmp"
    assert written.read_bytes() == original.read_bytes()  # BMP bytes written as they are
    assert (data_root / "downloads" / "dwb2023__cnmc-leukemia-2019" / "data").is_dir()


def test_parquet_rows_in_other_encodings_are_converted_or_skipped_loudly(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    png = image_bytes("cell", fmt="PNG")
    rows = [
        dict(subject_id="7", image_number=1, cell_count=1, image={"bytes": png, "path": None}, label=0, fold=1),
        dict(subject_id="H7", image_number=1, cell_count=1, image={"bytes": png, "path": None}, label=1, fold=None),
    ]
    table = pa.Table.from_pylist(rows).replace_schema_metadata(
        {"huggingface": json.dumps({"info": {"features": {"label": {"names": ["cancer", "healthy"]}}}})})
    pq.write_table(table, tmp_path / "t.parquet")
    with pytest.warns(UserWarning, match="1 parquet rows skipped.*no fold"):
        written = fetch.parquet_to_tcia([tmp_path / "t.parquet"], tmp_path / "out", progress=False)
    assert written["filename"].tolist() == ["UID_7_1_1_all.bmp"]
    path = Path(written["path"][0])
    assert path.read_bytes()[:2] == b"BM"  # re-encoded as BMP
    np.testing.assert_array_equal(read_image(path), cell_array("cell"))  # same pixels
    assert path.parent == tmp_path / "out" / "C-NMC_training_data" / "fold_1" / "all"


def test_huggingface_unreachable_names_the_host(tmp_path, data_root):
    port = _closed_port()
    with pytest.raises(FetchError, match=rf"could not reach 127\.0\.0\.1:{port}(.|\n)*Kaggle mirror"):
        fetch_huggingface(endpoint=f"http://127.0.0.1:{port}", progress=False)


# ---------------------------------------------------------------------------------------------
# command line


def test_script_help_runs():
    result = subprocess.run([sys.executable, str(REPO_ROOT / "data_scripts" / "fetch_cnmc.py"), "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for word in ("tcia", "kaggle", "hf", "ALLNET_DATA"):
        assert word in result.stdout


def test_main_reports_the_result_or_the_error(server, tmp_path, data_root, capsys):
    fake = make_tcia(tmp_path / "src", final=False)
    train, test = _hf_rows(fake.root)
    _serve_hf(server, fetch.HF_REPO, {"data/train.parquet": _parquet_bytes(train)})
    dest = tmp_path / "elsewhere"
    assert fetch.main(["hf", "--endpoint", server.url, "--no-test", "--dest", str(dest), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"C-NMC index of {dest}" in out and "fold_2" in out
    assert fetch.main(["tcia", "--dest", str(tmp_path / "other"), "--no-progress"]) == 1
    assert "fetch_cnmc.py tcia: error: TCIA needs the package address" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# issue 15: an existing file is checked, an archive bomb is refused


def test_an_existing_file_without_size_or_hash_is_checked_against_the_server(server, tmp_path):
    server.files["/pkg.zip"] = DATA
    url = f"{server.url}/pkg.zip"
    cut = tmp_path / "cut.zip"
    cut.write_bytes(DATA[:1000])  # e.g. a browser download that stopped
    with pytest.raises(FetchError, match=r"already exists but has 1000 bytes, expected 307200"):
        download(url, cut, progress=False)
    assert cut.read_bytes() == DATA[:1000]  # never overwritten
    whole = tmp_path / "whole.zip"
    whole.write_bytes(DATA)
    assert download(url, whole, progress=False) == whole
    assert all(r == "bytes=0-0" for _, r in server.log)  # only asked for the size
    unreachable = f"http://127.0.0.1:{_closed_port()}/pkg.zip"
    with pytest.raises(FetchError, match="cannot be checked"):
        download(unreachable, whole, progress=False, timeout=2)


def test_an_archive_bomb_is_refused_before_anything_is_written(tmp_path):
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("C-NMC_training_data/fold_0/all/big.bmp", b"\0" * (32 << 20))
    assert bomb.stat().st_size < 100_000
    with pytest.raises(FetchError, match=r"times larger; the limit is 100x"):
        safe_extract(bomb, tmp_path / "out", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.zip"]
    small = _zip(tmp_path / "small.zip", {"a/b.txt": b"x" * 5000})
    with pytest.raises(FetchError, match=r"refusing to extract 0.0 GiB \(the limit is"):
        safe_extract(small, tmp_path / "out", progress=False, max_bytes=1000)
    assert safe_extract(small, tmp_path / "out", progress=False) == tmp_path / "out"

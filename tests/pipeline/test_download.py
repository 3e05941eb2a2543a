"""The real-data downloader against a real HTTP server on 127.0.0.1 serving files made here."""

from __future__ import annotations

import hashlib
import http.server
import io
import socket
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest
import yaml

from conftest import PROJECT, env, project_params
from product_classifier import paths
from product_classifier.errors import DataError, DownloadError
from product_classifier.inference.imagestore import ImageStore
from product_classifier.pipeline.download import download_all, fetch, repack_images, session


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves `files` with Range, ETag and If-Range support, as a CDN does; can fail the first
    requests or cut transfers short (the first one, or every one with `cut_every`)."""

    files: dict[str, bytes] = {}
    fail_first = 0
    cut_after: int | None = None
    cut_every = False
    log: list[tuple[str, str | None]] = []
    if_range: list[str | None] = []

    @staticmethod
    def etag(data: bytes) -> str:
        return '"' + hashlib.sha256(data).hexdigest()[:16] + '"'

    def do_GET(self):  # noqa: N802
        name = self.path.rsplit("/", 1)[-1]
        rng = self.headers.get("Range")
        type(self).log.append((name, rng))
        type(self).if_range.append(self.headers.get("If-Range"))
        if type(self).fail_first > 0:
            type(self).fail_first -= 1
            self.send_error(503)
            return
        if name not in self.files:
            self.send_error(404)
            return
        data = self.files[name]
        if rng and self.headers.get("If-Range") not in (None, self.etag(data)):
            rng = None  # the client's part is of another version: send the whole file
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        if start >= len(data) and rng:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("ETag", self.etag(data))
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        body = data[start:]
        if type(self).cut_after is not None:
            body = body[: type(self).cut_after]
            if not type(self).cut_every:
                type(self).cut_after = None
            self.wfile.write(body)
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    Handler.files, Handler.fail_first, Handler.cut_after, Handler.cut_every = {}, 0, None, False
    Handler.log, Handler.if_range = [], []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    # a short poll: `shutdown()` waits for the loop to notice, half a second per test at the default
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


BLOB = bytes(range(256)) * 4000  # ~1 MB


def test_fetch_downloads_and_verifies(server, tmp_path):
    Handler.files["a.bin"] = BLOB
    dest = fetch(server + "a.bin", tmp_path / "a.bin", sha256=hashlib.sha256(BLOB).hexdigest())
    assert dest.read_bytes() == BLOB and not (tmp_path / "a.bin.part").exists()


def test_fetch_retries_server_errors(server, tmp_path):
    Handler.files["a.bin"], Handler.fail_first = BLOB, 2
    fetch(server + "a.bin", tmp_path / "a.bin", http=session(backoff=0.01))
    assert (tmp_path / "a.bin").read_bytes() == BLOB
    assert len(Handler.log) == 3


def test_fetch_resumes_a_cut_transfer_with_range(server, tmp_path):
    Handler.files["a.bin"], Handler.cut_after = BLOB, 300_000
    fetch(server + "a.bin", tmp_path / "a.bin")
    assert (tmp_path / "a.bin").read_bytes() == BLOB
    assert Handler.log[0] == ("a.bin", None)
    resumed_from = int(Handler.log[1][1].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_from <= 300_000


def test_fetch_resumes_a_part_file_left_by_an_earlier_run(server, tmp_path):
    Handler.files["a.bin"] = BLOB
    (tmp_path / "a.bin.part").write_bytes(BLOB[:1000])
    fetch(server + "a.bin", tmp_path / "a.bin")
    assert (tmp_path / "a.bin").read_bytes() == BLOB and Handler.log == [("a.bin", "bytes=1000-")]


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    Handler.files["a.bin"] = BLOB
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        fetch(server + "a.bin", tmp_path / "a.bin", sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_missing_file_and_closed_port_give_clear_errors(server, tmp_path):
    with pytest.raises(DownloadError, match="not found .404.*data.url"):
        fetch(server + "nope.csv", tmp_path / "nope.csv")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match="cannot reach .*data.source: sample"):
        fetch(f"http://127.0.0.1:{port}/x.csv", tmp_path / "x.csv", http=session(retries=1, backoff=0))


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_a_transfer_cut_every_time_stops_with_what_to_do_and_keeps_the_part(server, tmp_path):
    Handler.files["a.bin"], Handler.cut_after, Handler.cut_every = BLOB, 100_000, True
    with pytest.raises(DownloadError, match="interrupted after .* bytes.*; run again to resume"):
        fetch(server + "a.bin", tmp_path / "a.bin", attempts=2)
    kept = (tmp_path / "a.bin.part").stat().st_size
    assert not (tmp_path / "a.bin").exists() and 0 < kept < len(BLOB) and len(Handler.log) == 2
    Handler.cut_every, Handler.cut_after = False, None
    fetch(server + "a.bin", tmp_path / "a.bin")  # the next run resumes where it stopped
    assert (tmp_path / "a.bin").read_bytes() == BLOB and Handler.log[-1] == ("a.bin", f"bytes={kept}-")


def test_resume_sends_the_etag_and_restarts_when_the_file_changed(server, tmp_path):
    old, new = BLOB, BLOB[::-1]
    Handler.files["a.bin"], Handler.cut_after = old, 300_000
    with pytest.raises(DownloadError):
        fetch(server + "a.bin", tmp_path / "a.bin", attempts=1)  # leaves a part of the old version
    assert (tmp_path / "a.bin.part.etag").read_text() == Handler.etag(old)
    Handler.files["a.bin"] = new  # the file changes on the server before the resume
    fetch(server + "a.bin", tmp_path / "a.bin")
    assert Handler.if_range[-1] == Handler.etag(old)  # resume asked "only if still this version"
    assert (tmp_path / "a.bin").read_bytes() == new  # so no splice of old and new
    assert not (tmp_path / "a.bin.part.etag").exists()


def test_resume_of_the_same_version_uses_range_with_if_range(server, tmp_path):
    Handler.files["a.bin"], Handler.cut_after = BLOB, 300_000
    fetch(server + "a.bin", tmp_path / "a.bin")
    assert Handler.log[1][1].startswith("bytes=") and Handler.if_range[1] == Handler.etag(BLOB)
    assert (tmp_path / "a.bin").read_bytes() == BLOB


def test_416_completes_a_full_part_and_restarts_a_wrong_one(server, tmp_path):
    Handler.files["a.bin"] = BLOB
    (tmp_path / "a.bin.part").write_bytes(BLOB)  # complete, but not yet renamed (killed just before)
    fetch(server + "a.bin", tmp_path / "a.bin")
    assert (tmp_path / "a.bin").read_bytes() == BLOB and len(Handler.log) == 1
    (tmp_path / "b.bin.part").write_bytes(BLOB + b"junk")  # longer than the file: not this file
    Handler.files["b.bin"] = BLOB
    fetch(server + "b.bin", tmp_path / "b.bin")
    assert (tmp_path / "b.bin").read_bytes() == BLOB
    assert [r for n, r in Handler.log if n == "b.bin"] == [f"bytes={len(BLOB) + 4}-", None]


# The two layouts of the challenge's image archive: images_low.zip (what the original project
# downloads, folders at the root, made on a Mac) and images.zip (folders under images/).
LAYOUTS = {
    "images_low.zip": {"image_train/": b"", "image_train/image_1_product_2.jpg": b"jpg1",
                       "image_test/image_3_product_4.jpg": b"jpg3",
                       "__MACOSX/image_train/._image_1_product_2.jpg": b"\x00\x05\x16\x07",
                       "image_train/._image_1_product_2.jpg": b"\x00\x05\x16\x07", "image_train/.DS_Store": b"x"},
    "images.zip": {"images/image_train/image_1_product_2.jpg": b"jpg1", "images/image_test/image_3_product_4.jpg": b"jpg3"},
}


@pytest.mark.parametrize("archive", sorted(LAYOUTS))
def test_download_all_lays_out_the_real_structure(server, tmp_path, archive):
    Handler.files.update({"X.csv": b"x", archive: _zip(LAYOUTS[archive])})
    out = tmp_path / "raw"
    out.mkdir()
    counts = download_all(server, ("X.csv",), archive, tmp_path / "cache", out, {})
    assert (out / "X.csv").read_bytes() == b"x"
    assert sorted(p.name for p in out.iterdir()) == ["X.csv", paths.IMAGE_ARCHIVE]  # one file for all the images
    if archive == "images_low.zip":  # already image_train/ and image_test/ at the root: linked, its junk never read
        assert (out / paths.IMAGE_ARCHIVE).samefile(tmp_path / "cache" / archive)
    else:  # rewritten: the image folders at the root, nothing else
        with zipfile.ZipFile(out / paths.IMAGE_ARCHIVE) as zf:
            assert sorted(zf.namelist()) == ["image_test/image_3_product_4.jpg", "image_train/image_1_product_2.jpg"]
            assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_STORED}
    assert ImageStore(paths.images_url(out, "train")).read("image_1_product_2.jpg") == b"jpg1"
    assert ImageStore(paths.images_url(out, "test")).read_many(["image_3_product_4.jpg", "image_1_product_2.jpg"]) == {
        "image_3_product_4.jpg": b"jpg3", "image_1_product_2.jpg": None}
    assert counts == {"images": 2, "skipped": 0 if archive == "images.zip" else 3}
    # The same source archive gives the same bytes (fixed timestamps): DVC sees no change on a rerun.
    first = (out / paths.IMAGE_ARCHIVE).read_bytes()
    repack_images(tmp_path / "cache" / archive, out / paths.IMAGE_ARCHIVE)
    assert (out / paths.IMAGE_ARCHIVE).read_bytes() == first


def test_an_archive_already_laid_out_as_data_raw_keeps_it_is_linked_not_copied(server, tmp_path):
    """An archive with image_train/ and image_test/ at its root is data/raw's archive as it is."""
    entries = {"image_train/": b"", "image_train/image_1_product_2.jpg": b"jpg1", "image_test/image_3_product_4.jpg": b"jpg3"}
    Handler.files["images_low.zip"] = _zip(entries)
    out = tmp_path / "raw"
    out.mkdir()
    counts = download_all(server, (), "images_low.zip", tmp_path / "cache", out, {})
    assert counts == {"images": 2, "skipped": 0}
    assert (out / paths.IMAGE_ARCHIVE).samefile(tmp_path / "cache/images_low.zip")
    assert ImageStore(paths.images_url(out, "train")).read("image_1_product_2.jpg") == b"jpg1"
    # Every entry is still read: a damaged one fails the stage here, not later in preprocess.
    damaged = bytearray(_zip({"image_train/image_1_product_2.jpg": b"jpg1" * 100}))
    damaged[damaged.index(b"jpg1jpg1") + 5] ^= 0xFF  # inside the entry's data, so its CRC no longer matches
    Handler.files["images_low.zip"] = bytes(damaged)
    other = tmp_path / "raw2"
    other.mkdir()
    with pytest.raises(DataError, match="not a valid zip file .bad CRC-32"):
        download_all(server, (), "images_low.zip", tmp_path / "cache2", other, {})
    assert not (tmp_path / "cache2/images_low.zip").exists() and list(other.iterdir()) == []


def test_archive_without_image_folders_is_a_clear_error(server, tmp_path):
    Handler.files["images_low.zip"] = _zip({"photos/a.jpg": b"x", "__MACOSX/image_train/._a.jpg": b"x"})
    with pytest.raises(DataError, match="no image_train/ folder"):
        download_all(server, (), "images_low.zip", tmp_path / "cache", tmp_path, {})


@pytest.mark.parametrize("name", ["../evil.txt", "image_train/../../evil.txt", "/abs/image_train/x.jpg"])
def test_zip_with_unsafe_paths_is_refused(server, tmp_path, name):
    Handler.files["images.zip"] = _zip({name: b"x"})
    with pytest.raises(DataError, match="unsafe path"):
        download_all(server, (), "images.zip", tmp_path / "cache", tmp_path / "raw", {})
    assert not (tmp_path / "evil.txt").exists()


def test_sha256_pin_is_checked_for_the_archive_too(server, tmp_path):
    Handler.files["images.zip"] = _zip(LAYOUTS["images.zip"])
    with pytest.raises(DownloadError, match="images.zip: sha256 mismatch"):
        download_all(server, (), "images.zip", tmp_path / "cache", tmp_path, {"images.zip": "0" * 64})
    assert not (tmp_path / "cache/images.zip").exists()


def test_download_stage_from_huggingface_source(server, tmp_path):
    """The stage script with data.source: huggingface and the default archive, pointed at the local server."""
    files = {"X_train_update.csv": b",designation\n", "Y_train_CVw08PX.csv": b",prdtypecode\n",
             "X_test_update.csv": b",designation\n", "images_low.zip": _zip(LAYOUTS["images_low.zip"])}
    Handler.files.update(files)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(project_params({"data": {"source": "huggingface", "url": server}})))
    run = subprocess.run([sys.executable, str(PROJECT / "stages/download.py")], cwd=tmp_path, env=env(),
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert '"images": 2, "skipped": 3' in run.stdout
    raw = tmp_path / "data/raw"
    assert sorted(p.name for p in raw.iterdir()) == ["X_test_update.csv", "X_train_update.csv", "Y_train_CVw08PX.csv",
                                                     paths.IMAGE_ARCHIVE]
    assert ImageStore(paths.images_url(raw, "train")).read("image_1_product_2.jpg") == b"jpg1"
    # Offline: one line, nothing written.
    Handler.files.clear()
    (tmp_path / ".cache").rename(tmp_path / "old-cache")
    import shutil

    shutil.rmtree(raw)
    run = subprocess.run([sys.executable, str(PROJECT / "stages/download.py")], cwd=tmp_path, env=env(),
                         capture_output=True, text=True)
    assert run.returncode == 1 and run.stderr.startswith("error: ") and "404" in run.stderr
    assert not (tmp_path / "data/raw").exists()
    assert not Path(tmp_path / "data").exists() or not any(p.name.startswith(".raw") for p in (tmp_path / "data").iterdir())

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

from conftest import PROJECT, env
from product_classifier.download import download_all, fetch, session
from product_classifier.errors import DataError, DownloadError


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves `files` with Range support; can fail the first requests or cut a transfer short."""

    files: dict[str, bytes] = {}
    fail_first = 0
    cut_after: int | None = None
    log: list[tuple[str, str | None]] = []

    def do_GET(self):  # noqa: N802
        name = self.path.rsplit("/", 1)[-1]
        rng = self.headers.get("Range")
        type(self).log.append((name, rng))
        if type(self).fail_first > 0:
            type(self).fail_first -= 1
            self.send_error(503)
            return
        if name not in self.files:
            self.send_error(404)
            return
        data = self.files[name]
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if type(self).cut_after is not None:
            body, type(self).cut_after = body[: type(self).cut_after], None
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
    Handler.files, Handler.fail_first, Handler.cut_after, Handler.log = {}, 0, None, []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
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


def test_download_all_lays_out_the_real_structure(server, tmp_path):
    Handler.files.update({"X.csv": b"x", "images.zip": _zip({"images/image_train/image_1_product_2.jpg": b"jpg"})})
    out = tmp_path / "raw"
    out.mkdir()
    download_all(server, ("X.csv", "images.zip"), tmp_path / "cache", out, {})
    assert (out / "X.csv").read_bytes() == b"x"
    assert (out / "images/image_train/image_1_product_2.jpg").read_bytes() == b"jpg"


def test_zip_with_unsafe_paths_is_refused(server, tmp_path):
    Handler.files["images.zip"] = _zip({"../evil.txt": b"x"})
    with pytest.raises(DataError, match="unsafe path"):
        download_all(server, ("images.zip",), tmp_path / "cache", tmp_path / "raw", {})
    assert not (tmp_path / "evil.txt").exists()


def test_download_stage_from_huggingface_source(server, tmp_path):
    """The stage script with data.source: huggingface, pointed at the local server."""
    files = {"X_train_update.csv": b",designation\n", "Y_train_CVw08PX.csv": b",prdtypecode\n",
             "X_test_update.csv": b",designation\n",
             "images.zip": _zip({"images/image_train/image_1_product_2.jpg": b"jpg", "images/image_test/": b""})}
    Handler.files.update(files)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"data": {"source": "huggingface", "url": server}}))
    run = subprocess.run([sys.executable, str(PROJECT / "stages/download.py")], cwd=tmp_path, env=env(),
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    raw = tmp_path / "data/raw"
    assert sorted(p.name for p in raw.iterdir()) == ["X_test_update.csv", "X_train_update.csv", "Y_train_CVw08PX.csv", "images"]
    assert (raw / "images/image_train/image_1_product_2.jpg").read_bytes() == b"jpg"
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

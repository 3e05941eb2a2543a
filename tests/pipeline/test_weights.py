"""`make weights`: VGG16's ImageNet file installed once, offline, checked as Keras checks it."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import inspect
import subprocess
import sys
import threading

import pytest

from conftest import PROJECT
from product_classifier.errors import UserError
from product_classifier.pipeline import models, weights


def test_the_pinned_md5_is_the_one_keras_publishes():
    from keras.src.applications import vgg16

    assert f"file_hash=\"{weights.IMAGENET_MD5}\"" in inspect.getsource(vgg16).replace("'", '"')
    assert weights.IMAGENET_URL.endswith(weights.IMAGENET_NOTOP) and weights.IMAGENET_NOTOP in inspect.getsource(vgg16)


@pytest.fixture
def fake_weights(tmp_path):
    """A file standing in for the real one (which cannot be downloaded here): its own md5 and size."""
    path = tmp_path / "src" / weights.IMAGENET_NOTOP
    path.parent.mkdir()
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 4000)
    return path, {"md5": hashlib.md5(path.read_bytes()).hexdigest(), "size": path.stat().st_size}


@contextlib.contextmanager
def serving(folder):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()


def test_a_matching_file_is_installed_from_a_path_or_a_url(fake_weights, tmp_path):
    source, check = fake_weights
    dest = weights.install(str(source), tmp_path / "home/models" / weights.IMAGENET_NOTOP, **check)
    assert dest.read_bytes() == source.read_bytes()
    with serving(source.parent) as url:
        dest2 = weights.install(f"{url}/{source.name}", tmp_path / "home2/models" / weights.IMAGENET_NOTOP, **check)
    assert dest2.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in dest2.parent.iterdir()) == [weights.IMAGENET_NOTOP]  # nothing left beside it


def test_a_wrong_file_is_refused_and_nothing_is_installed(fake_weights, tmp_path):
    source, check = fake_weights
    dest = tmp_path / "home/models" / weights.IMAGENET_NOTOP
    with pytest.raises(UserError, match=f"md5 {check['md5']} .expected {check['size']:,} bytes, md5 0+\\)"):
        weights.install(str(source), dest, **{**check, "md5": "0" * 32})
    with pytest.raises(UserError, match="expected 1 bytes"):
        weights.install(str(source), dest, **{**check, "size": 1})
    assert list(dest.parent.iterdir()) == []
    with pytest.raises(UserError, match="file not found"):
        weights.install(str(tmp_path / "missing.h5"), dest)


def test_make_weights_refuses_a_file_that_is_not_the_published_one_in_one_line(fake_weights, tmp_path):
    source, _ = fake_weights
    home = tmp_path / "keras-home"
    result = subprocess.run(["make", "-s", "-C", str(PROJECT), "weights", f"FROM={source}"], capture_output=True,
                            text=True, env={"KERAS_HOME": str(home), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert result.returncode == 2, result  # make's own status when the command failed
    error = [line for line in result.stderr.splitlines() if not line.startswith("make")]
    assert len(error) == 1 and error[0].startswith("error: ") and "Traceback" not in result.stderr
    assert f"md5 {weights.IMAGENET_MD5}" in result.stderr and "nothing was installed" in result.stderr
    assert not (home / "models" / weights.IMAGENET_NOTOP).exists()
    usage = subprocess.run(["make", "-s", "-C", str(PROJECT), "weights"], capture_output=True, text=True,
                           env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert usage.returncode == 2 and "usage: make weights FROM=" in usage.stderr


def test_an_installed_file_is_what_imagenet_resolves_to_offline(fake_weights, tmp_path, monkeypatch):
    source, check = fake_weights
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    dest = weights.install(str(source), **check)  # the default destination: where Keras looks
    assert dest == tmp_path / "keras-home/models" / weights.IMAGENET_NOTOP
    assert models.resolve_vgg16_weights("imagenet") == str(dest)
    # Keras's own lookup, offline (an unreachable URL), finds the same file and accepts its hash.
    found = subprocess.run([sys.executable, "-c", "import keras, sys; print(keras.utils.get_file(sys.argv[1], "
                            "'http://127.0.0.1:9/x', cache_subdir='models', file_hash=sys.argv[2]))",
                            weights.IMAGENET_NOTOP, check["md5"]], capture_output=True, text=True,
                           env={"KERAS_HOME": str(tmp_path / "keras-home"), "PATH": "/usr/bin:/bin"})
    assert found.returncode == 0, found.stderr[-2000:]
    assert found.stdout.strip().splitlines()[-1] == str(dest)

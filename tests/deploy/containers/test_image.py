"""The serving image, built from Dockerfile.serve by `make image` (docker or podman) and run: checked from the host."""

from __future__ import annotations

import json
import re
import secrets
import shutil
import time
import uuid
from pathlib import Path

import httpx
import pytest

from conftest import free_port, raw_images

from .conftest import IMAGE_SIZE_BUDGET, LABEL, Engine, wait_for

pytestmark = [pytest.mark.container, pytest.mark.slow]
USER, PASSWORD = "image-user", secrets.token_urlsafe(16)
PODMAN_LOG = re.compile(r'^time="[^"]*" level=')  # podman's own messages (no systemd to run healthchecks)


def env_file(path: Path, **extra: str) -> Path:
    """Settings as a deployment passes them: a file, so that no secret is on a command line.
    HOST=127.0.0.1 as `.env.example` has it for `make serve`: the image must listen on every interface anyway."""
    values = {"SECRET_KEY": secrets.token_urlsafe(48), "TEST_USER": USER, "TEST_USER_PASSWORD": PASSWORD,
              "HOST": "127.0.0.1", "RATE_LIMIT_PREDICT": "1000/minute", **extra}
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    path.chmod(0o600)
    return path


def run(engine: Engine, image: str, *args: str, env: Path, name: str, port: int | None = None, volumes: tuple = (),
        detach: bool = True, command: tuple = ()):
    options = ["--name", name, "--label", LABEL, "--env-file", str(env)]
    if port:
        options += ["-p", f"127.0.0.1:{port}:8000"]
    for volume in volumes:
        options += ["-v", volume]
    if detach:
        return engine("run", "-d", *options, *args, image, *command, check=False)
    # Not --rm: podman's Docker API (docker CLI on `podman system service`) answers 0 for a --rm container
    # whatever it exited with; removed here instead.
    try:
        return engine("run", *options, *args, image, *command, check=False)
    finally:
        engine.remove(name, grace=0)


@pytest.fixture(scope="module")
def container(engine, serving_image, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("container")
    name, port = f"pctest-serving-{uuid.uuid4().hex[:8]}", free_port()
    result = run(engine, serving_image.tag, env=env_file(tmp / "serving.env"), name=name, port=port)
    assert result.returncode == 0, result.stderr
    try:
        wait_for(f"http://127.0.0.1:{port}/health/ready", 240, "serving container",
                 lambda: engine("logs", name, check=False).stdout[-4000:] + engine("logs", name, check=False).stderr[-4000:])
        yield name, f"http://127.0.0.1:{port}"
    finally:
        engine.remove(name, grace=5)


def test_ready_token_and_predict_from_the_host(container, tiny_repo):
    _, base = container
    assert httpx.get(f"{base}/health/ready").json()
    token = httpx.post(f"{base}/token", data={"username": USER, "password": PASSWORD})
    assert token.status_code == 200, token.text
    auth = {"Authorization": f"Bearer {token.json()['access_token']}"}
    name, image = next(iter(raw_images(tiny_repo / "data" / "raw").items()))
    response = httpx.post(f"{base}/predict", data={"designation": "Piscine hors-sol tubulaire"},
                          files={"image": (name, image, "image/jpeg")}, headers=auth, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["modalities"] == ["text", "image"] and body["model_version"] and body["top_k"]
    assert httpx.post(f"{base}/token", data={"username": USER, "password": "wrong"}).status_code == 401


def test_serves_as_uid_10001_not_root(engine, container, serving_image):
    name, _ = container
    assert engine("image", "inspect", "--format", "{{.Config.User}}", serving_image.tag).stdout.strip() == "10001:10001"
    status = engine("exec", name, "cat", "/proc/1/status").stdout
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert set(uids) == {"10001"}, status


def test_image_healthcheck_passes_on_the_network_address(engine, container, serving_image):
    name, _ = container
    # The container's config, which it inherits from the image's HEALTHCHECK (started without --health-* options):
    # podman's Docker API leaves Healthcheck out of `image inspect`, not out of `inspect` of a container.
    healthcheck = engine("inspect", "--format", "{{json .Config.Healthcheck}}", name).stdout
    assert "serving.healthcheck" in healthcheck, "built without --format docker? the HEALTHCHECK is missing"
    result = engine.healthcheck(name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_healthcheck_fails_when_only_loopback_listens(engine, serving_image, tmp_path):
    """An app on 127.0.0.1 inside answers itself but nobody else: the healthcheck must say unhealthy."""
    name = f"pctest-loopback-{uuid.uuid4().hex[:8]}"
    result = run(engine, serving_image.tag, env=env_file(tmp_path / "serving.env"), name=name,
                 command=("python", "-m", "serving", "--host", "127.0.0.1"))
    assert result.returncode == 0, result.stderr
    try:
        probe = ("import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=3)")
        deadline = time.monotonic() + 240
        while engine("exec", name, "python", "-c", probe, check=False).returncode != 0:
            assert time.monotonic() < deadline, engine("logs", name, check=False).stderr[-3000:]
            time.sleep(2)
        unhealthy = engine.healthcheck(name)
        assert unhealthy.returncode != 0, "healthcheck passed although only 127.0.0.1 listens"
    finally:
        engine.remove(name, grace=2)


def test_unreadable_models_stop_startup_with_one_line(engine, serving_image, tiny_repo, tmp_path):
    """Bind-mounted models the image's user cannot read: one clear line and exit 1, not a traceback."""
    models = tmp_path / "models"
    shutil.copytree(tiny_repo / "models", models)
    secret = sorted((models / "lstm").iterdir())[0]
    secret.chmod(0o600)  # owned by the test's user on the host (root, or CI's runner): uid 10001 cannot read it
    result = run(engine, serving_image.tag, env=env_file(tmp_path / "serving.env"), name=f"pctest-perm-{uuid.uuid4().hex[:8]}",
                 volumes=(f"{models}:/app/models:ro",), detach=False)
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip() and not PODMAN_LOG.match(line)]
    assert errors == [f"error: /app/models/{secret.relative_to(models)}: not readable by uid 10001, the user serving "
                      "runs as; make it readable (e.g. `chmod -R a+rX /app/models`)"], result.stderr


def test_image_size_is_within_budget(serving_image):
    assert serving_image.size < IMAGE_SIZE_BUDGET, f"serving image is {serving_image.size / 1e9:.2f} GB"


def test_unreadable_users_file_stops_startup_with_one_line(engine, serving_image, tmp_path):
    """`make users` writes USERS_FILE 0600 (password hashes): mounted as is, uid 10001 cannot read it."""
    users = tmp_path / "users.json"
    users.write_text("{}")
    users.chmod(0o600)
    result = run(engine, serving_image.tag, env=env_file(tmp_path / "serving.env", USERS_FILE="/app/users.json"),
                 name=f"pctest-users-{uuid.uuid4().hex[:8]}", volumes=(f"{users}:/app/users.json:ro",), detach=False)
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip() and not PODMAN_LOG.match(line)]
    assert errors == ["error: /app/users.json: not readable by uid 10001, the user serving runs as; make it readable "
                      "(e.g. `chown 10001 /app/users.json`)"], result.stderr


def test_image_has_only_the_inference_part_and_no_tensorflow_keras_or_pandas(engine, serving_image):
    """The models run on ONNX Runtime: neither TensorFlow nor Keras is installed in the image; serving reads no
    CSV, so no pandas either (the `batch` and `pipeline` extras have it). Of the library, only the inference part
    and the shared modules are installed: no pipeline, tracking or batch scoring package."""
    modules = ("tensorflow", "keras", "tf2onnx", "pandas", "onnxruntime", "product_classifier.inference",
               "product_classifier.pipeline", "product_classifier.tracking", "product_classifier.scoring", "serving")
    probe = f"import importlib.util as u; print([m for m in {modules!r} if u.find_spec(m)])"
    result = engine("run", "--rm", "--entrypoint", "python", serving_image.tag, "-c", probe)
    found = result.stdout.strip().splitlines()[-1]
    assert found == "['onnxruntime', 'product_classifier.inference', 'serving']", result.stdout + result.stderr


def test_image_holds_the_models_pruned_once(engine, serving_image, tiny_repo, tmp_path):
    """No .keras file (serving runs the ONNX exports), the bundle (which lists only served files) as dvc.lock records
    it: the build stage pruned the models, the runtime stage copied the result, so the image holds them once."""
    probe = ("import json, pathlib; m = pathlib.Path('/app/models'); "
             "print(json.dumps(sorted(p.relative_to(m).as_posix() for p in m.rglob('*') if p.is_file())))")
    result = engine("run", "--rm", "--entrypoint", "python", serving_image.tag, "-c", probe)
    files = json.loads(result.stdout.strip().splitlines()[-1])
    models = tiny_repo / "models"
    kept = [p.relative_to(models).as_posix() for p in models.rglob("*") if p.is_file() and p.suffix != ".keras"]
    assert files == sorted(kept) and "bundle.json" in files
    check = run(engine, serving_image.tag, env=env_file(tmp_path / "serving.env"), name=f"pctest-check-{uuid.uuid4().hex[:8]}",
                detach=False, command=("python", "-m", "serving", "--check"))
    assert check.returncode == 0 and "matches /app/dvc.lock" in check.stderr, check.stdout + check.stderr

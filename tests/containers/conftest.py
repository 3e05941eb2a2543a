"""Containers for real: podman builds Dockerfile.serve and runs it and the compose files (scripts/containers.sh).

No Docker engine and no image registry here: `scripts/containers.sh` configures podman (CONTAINERS_CONF),
makes the Dockerfile's base image and the stand-ins for prom/prometheus, prom/node-exporter, nginx and redis
from Debian packages, once, and builds the serving image. docker-compose (v1) drives podman through
`podman system service`. Everything a test starts carries the project name `pctest-*` or the label
`product-classifier-test`; leftovers of an interrupted run are removed before a run and after it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from conftest import PROJECT, free_port, process

SCRIPT = PROJECT / "scripts" / "containers.sh"
CONTAINERS_CONF = PROJECT / "deploy" / "podman" / "containers.conf"
LABEL = "product-classifier-test"
SERVING_TAG = "localhost/product-classifier-serving:test"
COMPOSE_TAG = "localhost/product-classifier-serving:local"  # the image name the compose files give serving
# Byte budget of the serving image built with the tiny pipeline's models (2.02 GB with TensorFlow, 1.61 GB trimmed;
# ONNX Runtime instead of TensorFlow since issue 12: 560 MB, 664 MB with SciPy for the drift test; then the models
# once, without the Keras files, and no pandas: README "Image size").
IMAGE_SIZE_BUDGET = 600_000_000

pytestmark = pytest.mark.container


def podman_env() -> dict:
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def podman(*args: str | Path, check: bool = True, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(["podman", *map(str, args)], env={**podman_env(), **kwargs.pop("env", {})},
                            capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(map(str, args))} failed ({result.returncode}):\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def remove_leftovers() -> None:
    """Containers and volumes the tests ran directly (label LABEL); compose projects clean up with `down -v`."""
    for kind in ("container", "volume"):
        names = podman(kind, "ls", *(["-a"] if kind == "container" else []), "--filter", f"label={LABEL}",
                       "--format", "{{.Names}}" if kind == "container" else "{{.Name}}", check=False).stdout.split()
        if names:
            podman(kind, "rm", "-f", *names, check=False)


@pytest.fixture(scope="session")
def container_images() -> dict:
    """The base image and the stand-ins (built once per machine, then reused): podman's environment."""
    if not (shutil.which("podman") and shutil.which("mmdebstrap")):
        pytest.skip("podman and mmdebstrap are needed: run `make sysdeps`")
    if os.geteuid() != 0:  # the recipe is measured rootful (cgroupfs, iptables, mmdebstrap's root mode)
        pytest.skip("the container tests run rootful podman: run them as root (CI's .ci/run is)")
    result = subprocess.run(["bash", SCRIPT, "images"], env=podman_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    remove_leftovers()
    yield podman_env()
    remove_leftovers()


def build_context(repo: Path, dest: Path) -> Path:
    """What `docker build .` sees in a checkout after `dvc repro`: the project, `repo`'s models and lock."""
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "constraints.txt", "README.md", ".dockerignore", "Dockerfile.serve"):
        shutil.copy(PROJECT / name, dest / name)
    for name in ("src", "serving"):
        shutil.copytree(PROJECT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(repo / "models", dest / "models")
    shutil.copy(repo / "dvc.lock", dest / "dvc.lock")
    (dest / "metrics" / "evaluate").mkdir(parents=True)
    shutil.copy(repo / "metrics" / "evaluate" / "metrics.json", dest / "metrics" / "evaluate" / "metrics.json")
    return dest


@dataclass(frozen=True)
class Image:
    tag: str
    size: int
    build_seconds: float


@pytest.fixture(scope="session")
def serving_image(container_images, tiny_repo, tmp_path_factory) -> Image:
    """Dockerfile.serve built with the tiny pipeline's models, tagged for the tests and for the compose files."""
    context = build_context(tiny_repo, tmp_path_factory.mktemp("image") / "context")
    start = time.monotonic()
    result = subprocess.run(["bash", SCRIPT, "serving", SERVING_TAG, context], env=container_images,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    seconds = time.monotonic() - start
    podman("tag", SERVING_TAG, COMPOSE_TAG)
    size = int(podman("image", "inspect", "--format", "{{.Size}}", SERVING_TAG).stdout.strip())
    print(f"\nserving image {SERVING_TAG}: {size / 1e9:.2f} GB, built in {seconds:.0f} s")
    return Image(SERVING_TAG, size, seconds)


# --- docker-compose over podman ---------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def docker_host(container_images, tmp_path_factory) -> Iterator[str]:
    """`podman system service` on a socket of its own: the Docker API docker-compose talks to."""
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is needed: run `make sysdeps`")
    sock = tmp_path_factory.mktemp("podman") / "podman.sock"
    with process(["podman", "system", "service", "--time=0", f"unix://{sock}"], sock.with_suffix(".log"),
                 container_images) as proc:
        deadline = time.monotonic() + 30
        while not sock.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "podman system service did not start"
            time.sleep(0.2)
        yield f"unix://{sock}"


@dataclass
class Compose:
    """docker-compose with one project name and directory, talking to podman."""

    project: str
    directory: Path
    files: list[str]
    docker_host: str

    def __call__(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        cmd = ["docker-compose", "--no-ansi", "-p", self.project, "--project-directory", str(self.directory)]
        for file in self.files:
            cmd += ["-f", str(self.directory / file)]
        result = subprocess.run([*cmd, *args], cwd=self.directory, capture_output=True, text=True, timeout=timeout,
                                env={**podman_env(), "DOCKER_HOST": self.docker_host, "COMPOSE_HTTP_TIMEOUT": "300"})
        if check and result.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    def container(self, service: str, index: int = 1) -> str:
        return f"{self.project}_{service}_{index}"

    def logs(self) -> str:
        return self("logs", "--no-color", "--tail", "20", check=False).stdout[-6000:]

    @contextlib.contextmanager
    def up(self, *services: str) -> Iterator[Compose]:
        self("down", "-v", "--remove-orphans", check=False)  # what an interrupted run left behind
        try:
            self("up", "-d", "--no-build", *services)
            yield self
        finally:
            self("down", "-v", "--remove-orphans", check=False)


def project_dir(dest: Path, repo: Path, env_values: dict[str, str], files: tuple[str, ...]) -> Path:
    """A checkout as a person has it before `docker compose up`: the compose files, monitoring/ and deploy/,
    `dvc repro`'s models and lock, and `.env` made from `.env.example` by typing each value after its `=`."""
    dest.mkdir(parents=True)
    for name in files:
        shutil.copy(PROJECT / name, dest / name)
    for name in ("monitoring", "deploy"):
        shutil.copytree(PROJECT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(repo / "models", dest / "models")
    shutil.copy(repo / "dvc.lock", dest / "dvc.lock")
    (dest / ".env").write_text(fill_env_example((PROJECT / ".env.example").read_text(), env_values))
    return dest


def fill_env_example(text: str, values: dict[str, str]) -> str:
    """`.env.example` as a person fills it in: each value typed right after its `NAME=` (an empty value), or over
    the example value; whatever else the line holds stays."""
    lines = text.splitlines()
    missing = set(values)
    for i, line in enumerate(lines):
        name, sep, rest = line.partition("=")
        if sep and name in values:
            example = "" if rest.lstrip().startswith("#") else rest.split(" ")[0]
            lines[i] = f"{name}={values[name]}{rest[len(example):]}"
            missing.discard(name)
    assert not missing, f".env.example has no line for {sorted(missing)}"
    return "\n".join(lines) + "\n"


def secret_values(**extra: str) -> dict[str, str]:
    return {"SECRET_KEY": secrets.token_urlsafe(48), "TEST_USER": "compose-user",
            "TEST_USER_PASSWORD": secrets.token_urlsafe(16), **extra}


def port_or_free(port: int) -> int:
    """The documented host port if nothing listens there, else a free one (other services on this machine)."""
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", port))
            return port
        except OSError:
            return free_port()


def wait_for(url: str, timeout: float, what: str, logs=lambda: "", status: int = 200,
             containers: tuple[str, ...] = ()) -> httpx.Response:
    """GET `url` until it answers `status`; fail at once if one of `containers` exited or was restarted."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        for name in containers:
            state = podman("inspect", "--format", "{{.State.Status}} {{.RestartCount}}", name, check=False).stdout.split()
            if state and (state[0] == "exited" or state[1] != "0"):
                pytest.fail(f"{what}: container {name} {'exited' if state[0] == 'exited' else 'restarted'}\n{logs()}")
        try:
            response = httpx.get(url, timeout=5)
            if response.status_code == status:
                return response
            last = response.status_code
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(1)
    pytest.fail(f"{what}: {url} not answering {status} after {timeout} s (last: {last!r})\n{logs()}")

"""Containers for real, with the engine CONTAINER_ENGINE names: `docker` or `podman`.

Default: docker where a Docker engine answers (`docker info`: GitHub's ubuntu-latest, a laptop), else podman.
- docker: the `docker` CLI and `docker compose` (`docker-compose` where the plugin is missing); images the tests
  do not build (the Dockerfile's base, prom/*, nginx, redis) come from the engine's registry as usual. DOCKER_HOST
  may point at any Docker API, `podman system service` included (how this branch is tested on a machine without
  Docker).
- podman (rootful; no image registry here): `scripts/containers.sh` configures podman (CONTAINERS_CONF), makes the
  Dockerfile's base image and the stand-ins for prom/prometheus, prom/node-exporter, nginx and redis from Debian
  packages, once; docker-compose (v1) drives podman through `podman system service`.
Both build the serving image with `make image`. Everything a test starts carries the project name `pctest-*` or
the label `product-classifier-test`; leftovers of an interrupted run are removed before a run and after it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from conftest import PROJECT, free_port, process

SCRIPT = PROJECT / "scripts" / "containers.sh"
CONTAINERS_CONF = PROJECT / "deploy" / "podman" / "containers.conf"
LABEL = "product-classifier-test"
ENGINES = ("docker", "podman")
SERVING_IMAGE = "localhost/product-classifier-serving"
SERVING_TAG = f"{SERVING_IMAGE}:test"
# Byte budget of the serving image built with the tiny pipeline's models (2.02 GB with TensorFlow, 1.61 GB trimmed;
# ONNX Runtime instead of TensorFlow since issue 12: 560 MB, 664 MB with SciPy for the drift test; then the models
# once, without the Keras files, and no pandas: docs/deployment.md "Image size").
IMAGE_SIZE_BUDGET = 600_000_000

pytestmark = pytest.mark.container


def docker_answers() -> bool:
    """A Docker engine answers the `docker` CLI (at DOCKER_HOST, or the default socket)."""
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def engine_name(environ: dict | None = None) -> str:
    """CONTAINER_ENGINE if set (docker or podman), else docker where a Docker engine answers, else podman."""
    name = (os.environ if environ is None else environ).get("CONTAINER_ENGINE", "").strip()
    if name and name not in ENGINES:
        raise ValueError(f"CONTAINER_ENGINE={name!r}: expected one of {', '.join(ENGINES)}")
    return name or ("docker" if docker_answers() else "podman")


def podman_env() -> dict:
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


@dataclass(frozen=True)
class Engine:
    """One container engine's CLI: `engine("run", ...)` runs `docker run ...` or `podman run ...`."""

    name: str
    env: dict

    def __call__(self, *args: str | Path, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        result = subprocess.run([self.name, *map(str, args)], env=self.env, capture_output=True, text=True,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{self.name} {' '.join(map(str, args))} failed ({result.returncode}):\n"
                                 f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    @property
    def compose_tag(self) -> str:
        """The image the compose files name (`product-classifier-serving:local`) as this engine resolves it:
        podman looks short names up under localhost/, Docker under docker.io/library/."""
        return f"{SERVING_IMAGE}:local" if self.name == "podman" else "product-classifier-serving:local"

    def remove(self, name: str, grace: int = 5) -> None:
        if self.name == "podman":
            self("rm", "-f", "-t", str(grace), name, check=False)
        else:
            self("stop", "-t", str(grace), name, check=False)
            self("rm", "-f", name, check=False)

    def healthcheck(self, container: str) -> subprocess.CompletedProcess:
        """The container's HEALTHCHECK command, run once now. podman: `podman healthcheck run` (no systemd here to
        run it on its interval). docker: the configured test run with `docker exec`, as the engine runs it (the CLI
        has no command to run it on demand, and podman's service behind DOCKER_HOST never runs it by itself)."""
        if self.name == "podman":
            return self("healthcheck", "run", container, check=False)
        test = json.loads(self("inspect", "--format", "{{json .Config.Healthcheck.Test}}", container).stdout)
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{container}: no healthcheck ({test})"
        command = test[1:] if test[0] == "CMD" else ["/bin/sh", "-c", test[1]]
        return self("exec", container, *command, check=False)

    def remove_leftovers(self) -> None:
        """Containers and volumes the tests ran directly (label LABEL); compose projects clean up with `down -v`."""
        for kind, listing, name in (("container", ("ls", "-a"), "{{.Names}}"), ("volume", ("ls",), "{{.Name}}")):
            names = self(kind, *listing, "--filter", f"label={LABEL}", "--format", name, check=False).stdout.split()
            if names:
                self(kind, "rm", "-f", *names, check=False)


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    """The engine CONTAINER_ENGINE picks, ready: podman with its base image and stand-ins (built once per machine,
    then reused), or a Docker engine that answers. No leftovers of an earlier run."""
    try:
        name = engine_name()
    except ValueError as exc:
        pytest.fail(str(exc))
    if name == "podman":
        if not (shutil.which("podman") and shutil.which("mmdebstrap")):
            pytest.skip("podman and mmdebstrap are needed: run `make sysdeps`")
        if os.geteuid() != 0:  # the recipe is measured rootful (cgroupfs, iptables, mmdebstrap's root mode)
            pytest.skip("the podman recipe runs rootful: run it as root, or use Docker (CONTAINER_ENGINE=docker)")
        result = subprocess.run(["bash", SCRIPT, "images"], env=podman_env(), capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
        ready = Engine("podman", podman_env())
    else:
        if shutil.which("docker") is None:
            pytest.skip("CONTAINER_ENGINE=docker: the docker CLI is needed: run `make sysdeps`")
        if not docker_answers():
            pytest.fail(f"CONTAINER_ENGINE=docker: `docker info` fails (DOCKER_HOST={os.environ.get('DOCKER_HOST')!r})"
                        ": start Docker or point DOCKER_HOST at a running engine")
        ready = Engine("docker", dict(os.environ))
    ready.remove_leftovers()
    yield ready
    ready.remove_leftovers()


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
def serving_image(engine, tiny_repo, tmp_path_factory) -> Image:
    """Dockerfile.serve built by `make image` with the tiny pipeline's models, tagged for the tests and for the
    compose files. podman: through `scripts/containers.sh serving` (its base image first, pip through the host's
    CAs); docker: `make image DOCKER=docker` as a person runs it."""
    context = build_context(tiny_repo, tmp_path_factory.mktemp("image") / "context")
    if engine.name == "podman":
        cmd = ["bash", SCRIPT, "serving", SERVING_TAG, context]
    else:
        cmd = ["make", "--no-print-directory", "-C", PROJECT, "image", "DOCKER=docker", f"IMAGE={SERVING_IMAGE}",
               "TAG=test", f"CONTEXT={context}"]
    start = time.monotonic()
    result = subprocess.run(list(map(str, cmd)), env=engine.env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    seconds = time.monotonic() - start
    engine("tag", SERVING_TAG, engine.compose_tag)
    size = int(engine("image", "inspect", "--format", "{{.Size}}", SERVING_TAG).stdout.strip())
    print(f"\nserving image {SERVING_TAG} ({engine.name}): {size / 1e9:.2f} GB, built in {seconds:.0f} s")
    return Image(SERVING_TAG, size, seconds)


# --- docker-compose over podman ---------------------------------------------------------------------------------

def compose_command(engine: Engine) -> list[str]:
    """docker: `docker compose` where the plugin answers, else `docker-compose`; podman: `docker-compose` (v1)."""
    if engine.name == "docker" and subprocess.run(["docker", "compose", "version"], capture_output=True,
                                                  env=engine.env).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose") is None:
        pytest.skip("docker compose or docker-compose is needed: run `make sysdeps`")
    return ["docker-compose"]


@pytest.fixture(scope="session")
def compose_env(engine, tmp_path_factory) -> Iterator[dict]:
    """The environment compose runs in. docker: the engine's own (DOCKER_HOST as the caller set it, if at all);
    podman: `podman system service` on a socket of its own, the Docker API docker-compose talks to."""
    if engine.name == "docker":
        yield engine.env
        return
    sock = tmp_path_factory.mktemp("podman") / "podman.sock"
    with process(["podman", "system", "service", "--time=0", f"unix://{sock}"], sock.with_suffix(".log"),
                 engine.env) as proc:
        deadline = time.monotonic() + 30
        while not sock.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "podman system service did not start"
            time.sleep(0.2)
        yield {**engine.env, "DOCKER_HOST": f"unix://{sock}"}


@dataclass
class Compose:
    """A compose project (one name and directory) on the suite's engine: `docker compose` or docker-compose."""

    project: str
    directory: Path
    files: list[str]
    env: dict
    engine: Engine
    command: list[str] = field(init=False)  # `docker compose` or `docker-compose`, asked once per project

    def __post_init__(self):
        self.command = compose_command(self.engine)

    def __call__(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        cmd = [*self.command, "--ansi", "never", "-p", self.project,
               "--project-directory", str(self.directory)]
        for file in self.files:
            cmd += ["-f", str(self.directory / file)]
        result = subprocess.run([*cmd, *args], cwd=self.directory, capture_output=True, text=True, timeout=timeout,
                                env={**self.env, "COMPOSE_HTTP_TIMEOUT": "300"})
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(self.command)} {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    def container(self, service: str) -> str:
        """The id of `service`'s container (v1 names it project_service_1, v2 project-service-1)."""
        ids = self("ps", "-a", "-q", service).stdout.split()
        assert len(ids) == 1, f"{service}: containers {ids}\n{self.logs()}"
        return ids[0]

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
             containers: tuple[str, ...] = (), engine: Engine | None = None) -> httpx.Response:
    """GET `url` until it answers `status`; fail at once if one of `containers` exited or was restarted."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        for name in containers:
            state = engine("inspect", "--format", "{{.State.Status}} {{.RestartCount}}", name, check=False).stdout.split()
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

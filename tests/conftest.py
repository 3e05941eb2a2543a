"""Shared fixtures: real DVC pipelines in temporary git repositories, with tiny params."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import httpx
import psutil
import pytest
import yaml
from filelock import FileLock

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CI_WORKFLOW = PROJECT / ".github/workflows/ci.yml"

# Small enough for a full `dvc repro` in well under a minute on 2 cores.
TINY = {
    "data": {"sample_size": 300},
    "preprocess": {"image_size": 32, "max_len": 24},
    "train": {"epochs": 3, "batch_size": 32},
    "evaluate": {"latency_samples": 5},
}


def deep_update(base: dict, changes: dict) -> dict:
    out = dict(base)
    for key, value in changes.items():
        out[key] = deep_update(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


# Hermetic: nothing of the developer's shell reaches a test or the processes it starts. Tracking,
# remotes, CI, cloud and backend settings by prefix, and every variable `.env.example` documents (the
# serving and compose settings), are removed from this process's environment before any test runs;
# a test that needs one sets it for its own process (`sh(..., extra_env=...)`, `monkeypatch`).
LEAKY_PREFIXES = ("MLFLOW_", "DAGSHUB_", "AWS_", "GITHUB_", "DVC_", "KERAS_", "RAY_", "GIT_")
DOCUMENTED = {line.split("=", 1)[0].strip() for line in (PROJECT / ".env.example").read_text().splitlines()
              if "=" in line and not line.lstrip().startswith("#")}


def leaky(name: str) -> bool:
    return name.startswith(LEAKY_PREFIXES) or name in DOCUMENTED


GIT_IDENTITY = {"GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
                "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com"}
for _name in [n for n in os.environ if leaky(n)]:
    del os.environ[_name]
os.environ.update(GIT_IDENTITY)


def env() -> dict:
    e = dict(os.environ)
    e["PATH"] = f"{BIN}{os.pathsep}{e.get('PATH', '')}"
    e.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return e


def sh(cmd: str, cwd: Path, check: bool = True, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, shell=True, cwd=cwd, env={**env(), **(extra_env or {})},
                            capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"`{cmd}` failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


# What `make_repo` copies of the project (beside params.yaml, which it writes): the pipeline's files and folders.
PIPELINE_FILES = ("dvc.yaml", ".dvcignore", ".gitignore")
PIPELINE_DIRS = ("stages", "src")


def make_repo(path: Path, params: dict | None = None, *, tiny: bool = True) -> Path:
    """A fresh git + DVC repository holding this project's pipeline, committed once; its params are the
    project's with `TINY`'s changes (unless `tiny` is false), then `params`'s."""
    path.mkdir(parents=True, exist_ok=True)
    for name in PIPELINE_FILES:
        shutil.copy(PROJECT / name, path / name)
    for name in PIPELINE_DIRS:
        shutil.copytree(PROJECT / name, path / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    base = yaml.safe_load((PROJECT / "params.yaml").read_text())
    (path / "params.yaml").write_text(yaml.safe_dump(deep_update(base, deep_update(TINY if tiny else {}, params or {})), sort_keys=False))
    sh("git init -q -b main && dvc init -q && dvc config core.analytics false && git add -A && git commit -qm init", path)
    return path


def ran(output: str) -> list[str]:
    """The stages `dvc repro` (or `dvc exp run`) ran, in order, from its output."""
    return re.findall(r"Running stage '([a-z_0-9]+)'", output)


def raw_images(raw: Path, split: str = "train") -> dict[str, bytes]:
    """data/raw's images of `split` (from its archive), by file name, in name order."""
    from product_classifier import paths

    prefix = f"image_{split}/"
    with zipfile.ZipFile(raw / paths.IMAGE_ARCHIVE) as zf:
        return {n.removeprefix(prefix): zf.read(n) for n in sorted(zf.namelist()) if n.startswith(prefix)}


def extract_raw_images(raw: Path, dest: Path, split: str = "train", names: list[str] | None = None) -> list[Path]:
    """data/raw's images of `split` (all, or those of `names`) written as files in `dest`, as a user's folder has them."""
    dest.mkdir(parents=True, exist_ok=True)
    images = raw_images(raw, split)
    out = []
    for name in images if names is None else names:
        (dest / name).write_bytes(images[name])
        out.append(dest / name)
    return out


def rewrite_raw_images(raw: Path, changes: dict[str, bytes | None]) -> None:
    """data/raw's archive with entries (`image_train/<file name>`) replaced by new bytes, or removed (None)."""
    from product_classifier import paths
    from product_classifier.inference.imagestore import write_archive

    archive = raw / paths.IMAGE_ARCHIVE
    with zipfile.ZipFile(archive) as zf:
        entries = {n: zf.read(n) for n in zf.namelist()}
    entries.update(changes)
    archive.unlink()  # a hard link into the DVC cache, maybe: never written through
    write_archive(archive, ((n, data) for n, data in entries.items() if data is not None))


QUALITY = ("accuracy", "f1_weighted", "f1_macro")


def quality(repo: Path) -> dict:
    """Each model's quality on the test split, from the evaluate stage's metrics."""
    metrics = json.loads((repo / "metrics/evaluate/metrics.json").read_text())
    return {model: {k: metrics[model][k] for k in QUALITY} for model in ("fused", "lstm", "vgg16")}


def workflow_step(name: str, workflow: Path = CI_WORKFLOW) -> dict:
    """The step named `name` in a workflow file, as CI runs it."""
    jobs = yaml.safe_load(workflow.read_text())["jobs"].values()
    [step] = [s for job in jobs for s in job.get("steps", []) if s.get("name") == name]
    return step


# --- servers started by tests -------------------------------------------------------------------

def free_port() -> int:
    """A port free now, for a server that must know its own address before it starts (Prometheus scrapes
    itself; a closed port nobody listens on). Other servers start on port 0: see `listening_port`."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening_port(proc: subprocess.Popen, log: Path, timeout: float = 60) -> int:
    """The TCP port a server started on port 0 listens on (its process or a child's): the port is taken by the
    process that serves, so no other process can take it between a check and the start."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args[0]} exited with {proc.returncode} before listening:\n{log.read_text()[-4000:]}")
        with contextlib.suppress(psutil.Error):
            server = psutil.Process(proc.pid)
            for member in (server, *server.children(recursive=True)):
                ports = [c.laddr.port for c in member.net_connections("tcp") if c.status == psutil.CONN_LISTEN]
                if ports:
                    return ports[0]
        time.sleep(0.2)
    pytest.fail(f"{proc.args[0]} not listening after {timeout} s:\n{log.read_text()[-4000:]}")


@contextlib.contextmanager
def process(cmd: list, log: Path, env: dict | None = None, cwd: Path = PROJECT):
    """A server process for the duration of the block, output to `log`, stopped (then killed) at the end."""
    with log.open("w") as out:
        proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_until_up(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args[0]} exited with {proc.returncode} before {url} answered:\n{log.read_text()[-4000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    pytest.fail(f"{url} not up after {timeout} s:\n{log.read_text()[-4000:]}")


def add_make(repo: Path) -> None:
    """The project's Makefile and scripts, so the targets CI calls run here as they do in CI."""
    shutil.copy(PROJECT / "Makefile", repo / "Makefile")
    shutil.copytree(PROJECT / "scripts", repo / "scripts", dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))


def copy_repo(repo: Path, dest: Path) -> Path:
    """A writable copy of a reproduced repository (git history, DVC cache, outputs, lock): what `make_repo`
    and `dvc repro` would give again, without the minute of training."""
    shutil.copytree(repo, dest, symlinks=True)
    return dest


# Built once, kept under .cache/<name>/<key> (the key: a digest of what the build reads) and copied into each
# session while the key holds. Parallel workers (`pytest -n`, Makefile TEST_WORKERS) wait on a lock for one build.
CACHE = PROJECT / ".cache"


def kept(name: str, key: str, build) -> Path:
    """`build(folder)` once per key, in a staging folder renamed into place: a kept build is always a whole one."""
    root = CACHE / name
    final = root / key
    if (final / ".complete").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(root / ".lock"):
        if not (final / ".complete").is_file():
            staging = Path(tempfile.mkdtemp(dir=root, prefix="building-"))
            try:  # built where it is kept (a repository moves with its folder), then renamed into place
                build(staging)
                (staging / ".complete").touch()
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            shutil.rmtree(final, ignore_errors=True)
            staging.rename(final)
            for old in root.iterdir():  # earlier keys' builds (leftovers of an interrupted build too: we hold the lock)
                if old.is_dir() and old != final:
                    shutil.rmtree(old, ignore_errors=True)
    return final


# The tiny pipeline is a function of these files (and of TINY and the Python version).
TINY_INPUTS = (*PIPELINE_FILES, *PIPELINE_DIRS, "params.yaml", "constraints.txt", "pyproject.toml")


def digest_files(digest, names) -> str:
    """`digest` updated with the path and bytes of each file under `names` (files or folders of the project)."""
    for name in names:
        root = PROJECT / name
        files = [root] if root.is_file() else sorted(f for f in root.rglob("*") if f.is_file()
                                                    and "__pycache__" not in f.parts and ".egg-info" not in str(f))
        for f in files:
            digest.update(f.relative_to(PROJECT).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def tiny_key() -> str:
    return digest_files(hashlib.sha256(json.dumps([TINY, sys.version]).encode()), TINY_INPUTS)


def build_tiny(folder: Path) -> None:
    repo = make_repo(folder / "repo")
    sh("dvc repro -q", repo, extra_env={"MLFLOW_TRACKING_URI": "none"})  # tracking: tests/pipeline/test_tracking.py


def build_changed(folder: Path) -> None:
    repo = copy_repo(kept("tiny-pipeline", tiny_key(), build_tiny) / "repo", folder / "repo")
    add_make(repo)
    no_tracking = {"MLFLOW_TRACKING_URI": "none"}
    sh("git add -A && git commit -qm 'baseline: 3 epochs' && git checkout -qb fewer-epochs", repo)
    (folder / "exp.txt").write_text(sh("dvc exp run -S train.epochs=2", repo, extra_env=no_tracking).stdout)
    (folder / "show.md").write_text(sh("dvc exp show --md --no-pager", repo).stdout)


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory) -> Path:
    """The real pipeline on the tiny sample, run once per version of its inputs (TINY_INPUTS) and copied
    into each session; treat it as read-only (`copy_repo` it to change anything)."""
    return copy_repo(kept("tiny-pipeline", tiny_key(), build_tiny) / "repo", tmp_path_factory.mktemp("tiny") / "repo")


@pytest.fixture(scope="session")
def changed_repo(tmp_path_factory) -> tuple[Path, str, str]:
    """A pull request as users make one: the tiny pipeline committed on `main` (with the Makefile and scripts
    CI calls), then on a branch `dvc exp run -S train.epochs=2` in the workspace. One `exp run` for every
    test that reads an experiment (kept like the tiny pipeline, with the Makefile and scripts in its key);
    returns (repo, the exp run's output, `dvc exp show`). Read-only."""
    built = kept("changed-pipeline", digest_files(hashlib.sha256(tiny_key().encode()), ("Makefile", "scripts")),
                 build_changed)
    repo = copy_repo(built / "repo", tmp_path_factory.mktemp("changed") / "repo")
    return repo, (built / "exp.txt").read_text(), (built / "show.md").read_text()


@pytest.fixture(scope="session")
def tiny_models(tiny_repo) -> Path:
    return tiny_repo / "models"


# --- parallel workers (pytest-xdist: Makefile TEST_WORKERS) ------------------------------------------------
# Tests that share something costly or exclusive run in one worker, one group after the other: the container suite
# (one engine, one image, fixed names and subnet), the tests that install the node tools into .cache/node, and each
# module that defines a fixture shared beyond one test (a server, a cluster, a trained model: scope module, class
# or session). Every other test goes to whichever worker is free. (A scheduler of our own: xdist's `xdist_group`
# marks do not reach the node ids under pytest 9.)
SHARED_GROUPS = {"containers": ("tests/deploy/containers/",),
                 "node": ("tests/deploy/test_workflows.py", "tests/monitoring/test_monitoring_config.py")}
SHARED_FIXTURE = re.compile(r"@pytest\.fixture\(scope=\"(module|class|session)\"")


@functools.cache
def shares_fixtures(module: str) -> bool:
    return bool(SHARED_FIXTURE.search((PROJECT / module).read_text()))


def xdist_group(nodeid: str) -> str:
    """The unit a worker takes whole: a group's name, a module's path, or the test itself."""
    module = nodeid.split("::", 1)[0]
    for group, prefixes in SHARED_GROUPS.items():
        if module.startswith(prefixes):
            return group
    return module if shares_fixtures(module) else nodeid


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class Groups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_group(nodeid)

    return Groups(config, log)


SLOW_MARKERS = ("slow", "e2e", "container")
# Handed out before every other group: the longest (the default pipeline trained, about 4 minutes of a worker), which
# needs no kept build, so it trains while another worker builds the tiny pipeline the other slow tests wait for.
FIRST = ("tests/model/test_model_behaviour.py",)


def start_order(item) -> int:
    if item.nodeid.startswith(FIRST):
        return 0
    return 1 if any(item.get_closest_marker(m) for m in SLOW_MARKERS) else 2


@pytest.hookimpl(specname="pytest_collection_modifyitems", wrapper=True, tryfirst=True)
def pytest_slow_tests_first(config, items):
    """After pytest-randomly's shuffle (this wrapper is outside it): FIRST, then the slow tests, in their shuffled
    order, so parallel workers end on short tests instead of one waiting for another's long one (with
    `--no-loadscope-reorder` the scheduler hands out groups in this order)."""
    yield
    items.sort(key=start_order)


def project_params(overrides: dict | None = None) -> dict:
    """params.yaml as parsed, with `overrides` (nested like it) merged in: params.yaml is the one place of every
    value (the typed model has no defaults), so a test that changes one key starts from the file."""
    return deep_update(yaml.safe_load((PROJECT / "params.yaml").read_text()), overrides or {})

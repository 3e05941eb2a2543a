"""DVC remote: `make dagshub` writes the right config offline; push/pull round trip against moto's S3 server."""

from __future__ import annotations

import configparser
import hashlib
import logging
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import add_make, copy_repo, env, free_port, sh, workflow_step
from product_classifier.tracking import settings

TOKEN = "dhtok-0123456789abcdef"
NO_TRACKING = {"MLFLOW_TRACKING_URI": "none"}


def dvc_config(path: Path) -> dict[str, dict[str, str]]:
    parser = configparser.ConfigParser()
    parser.read(path)
    # DVC writes section names as ['remote "origin"'].
    return {section.strip("'"): dict(parser[section]) for section in parser.sections()}


@pytest.fixture
def bare_repo(tmp_path) -> Path:
    repo = tmp_path / "rakuten-classifier"
    repo.mkdir()
    sh("git init -q -b main && dvc init -q && git remote add origin https://github.com/acme/rakuten-classifier.git",
       repo)
    add_make(repo)
    (repo / ".env").write_text("SECRET_KEY=keep-me\nMLFLOW_TRACKING_URI=http://old:5000\n")
    return repo


def test_make_dagshub_configures_dvc_and_mlflow_offline(bare_repo, monkeypatch):
    result = sh("make dagshub", bare_repo, extra_env={
        "DAGSHUB_USERNAME": "alice", "DAGSHUB_TOKEN": TOKEN, "DAGSHUB_REPO_OWNER": "acme",
        "DAGSHUB_REPO_NAME": "", "DAGSHUB_CLIENT_HOST": ""})
    assert TOKEN not in result.stdout + result.stderr

    shared = dvc_config(bare_repo / ".dvc/config")
    assert shared['remote "origin"'] == {"url": "s3://dvc", "endpointurl": "https://dagshub.com/acme/rakuten-classifier.s3"}
    assert shared["core"]["remote"] == "origin"
    assert TOKEN not in (bare_repo / ".dvc/config").read_text()
    local = dvc_config(bare_repo / ".dvc/config.local")
    assert local['remote "origin"'] == {"access_key_id": TOKEN, "secret_access_key": TOKEN}
    assert ".dvc/config.local" not in sh("git add -A --dry-run", bare_repo).stdout  # never committed

    env_file = (bare_repo / ".env").read_text()
    assert "SECRET_KEY=keep-me" in env_file
    assert "MLFLOW_TRACKING_URI=https://dagshub.com/acme/rakuten-classifier.mlflow" in env_file
    assert "MLFLOW_TRACKING_USERNAME=alice" in env_file and f"MLFLOW_TRACKING_PASSWORD={TOKEN}" in env_file
    assert "http://old:5000" not in env_file
    assert (bare_repo / ".env").stat().st_mode & 0o077 == 0

    # The pipeline's tracker picks the DagsHub server up from .env; the URI holds no credentials.
    monkeypatch.chdir(bare_repo)
    assert settings.tracking_uri({}) == "https://dagshub.com/acme/rakuten-classifier.mlflow"


def test_make_dagshub_without_token_writes_no_credentials(bare_repo):
    sh("make dagshub", bare_repo, extra_env={"DAGSHUB_USERNAME": "", "DAGSHUB_TOKEN": "", "DAGSHUB_USER_TOKEN": "",
                                             "DAGSHUB_REPO_OWNER": "acme", "DAGSHUB_REPO_NAME": "other"})
    assert dvc_config(bare_repo / ".dvc/config")['remote "origin"']["endpointurl"] == "https://dagshub.com/acme/other.s3"
    assert not (bare_repo / ".dvc/config.local").exists()
    assert "MLFLOW_TRACKING_PASSWORD" not in (bare_repo / ".env").read_text()


def recording(names: tuple[str, ...], bin_dir: Path, log: Path) -> str:
    """A PATH whose `names` are wrappers that append their argv (what `ps` shows) to `log`, then run the real one."""
    path = env()["PATH"]  # the project's environment first, as for every command a test runs (pytest run by hand too)
    bin_dir.mkdir()
    for name in names:
        wrapper = bin_dir / name
        wrapper.write_text(f'#!/bin/sh\nprintf "%s\\n" "{name} $*" >> "{log}"\nexec "{shutil.which(name, path=path)}" "$@"\n')
        wrapper.chmod(0o755)
    return f"{bin_dir}:{path}"


def test_make_dagshub_puts_the_token_on_no_command_line(bare_repo, tmp_path):
    log = tmp_path / "argv.log"
    path = recording(("dvc", "git", "python", "python3"), tmp_path / "bin", log)
    sh("make dagshub", bare_repo, extra_env={"PATH": path, "DAGSHUB_USERNAME": "alice", "DAGSHUB_TOKEN": TOKEN,
                                             "DAGSHUB_REPO_OWNER": "acme", "DAGSHUB_REPO_NAME": ""})
    commands = log.read_text().splitlines()
    assert any(c.startswith("dvc remote add") for c in commands) and any("dagshub_setup.py" in c for c in commands)
    assert not [c for c in commands if TOKEN in c]
    assert dvc_config(bare_repo / ".dvc/config.local")['remote "origin"']["secret_access_key"] == TOKEN


# Runs scripts/dagshub_setup.py under umask 022 and looks at .env and .dvc/config.local each time the script opens
# or chmods one (Python's audit hooks): a file that holds the token while others may read it is a leak, however
# briefly (written, then chmod-ed).
WATCH_MODES = """
import os, runpy, sys
os.umask(0o022)
token, watched, seen, busy = os.environ["DAGSHUB_TOKEN"].encode(), {os.path.abspath(p) for p in sys.argv[1:]}, [], []
def hook(event, args):
    if busy or event not in ("open", "os.chmod") or not isinstance(args[0], (str, bytes, os.PathLike)):
        return
    path = os.path.abspath(os.fsdecode(args[0]))
    if path in watched and os.path.exists(path):
        busy.append(1)
        with open(path, "rb") as f:
            exposed = token in f.read() and os.stat(path).st_mode & 0o077
        busy.clear()
        if exposed:
            seen.append(f"{event} {path}: {oct(os.stat(path).st_mode & 0o777)} with the token in it")
sys.addaudithook(hook)
try:
    runpy.run_path("scripts/dagshub_setup.py", run_name="__main__")
finally:
    print("EXPOSED:", seen, file=sys.stderr)
"""


@pytest.mark.parametrize("env_exists", [True, False], ids=["env-file-there", "no-env-file"])
def test_make_dagshub_files_are_private_before_the_token_is_in_them(bare_repo, env_exists):
    if env_exists:
        (bare_repo / ".env").chmod(0o644)
    else:
        (bare_repo / ".env").unlink()
    result = subprocess.run([sys.executable, "-c", WATCH_MODES, ".env", ".dvc/config.local"], cwd=bare_repo,
                            capture_output=True, text=True, env={**env(), "DAGSHUB_USERNAME": "alice",
                                                                  "DAGSHUB_TOKEN": TOKEN, "DAGSHUB_REPO_OWNER": "acme"})
    assert result.returncode == 0, result.stderr
    assert "EXPOSED: []" in result.stderr, result.stderr
    for name in (".env", ".dvc/config.local"):
        assert TOKEN in (bare_repo / name).read_text()
        assert stat.S_IMODE((bare_repo / name).stat().st_mode) == 0o600, name


def test_make_dagshub_needs_a_user_or_owner(bare_repo):
    result = sh("make dagshub", bare_repo, check=False, extra_env={"DAGSHUB_USERNAME": "", "DAGSHUB_REPO_OWNER": ""})
    assert result.returncode != 0 and "DAGSHUB_USERNAME" in result.stderr


# --- push and pull against a real S3 API -----------------------------------------------------------

@pytest.fixture(scope="module")
def s3_endpoint():
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per S3 request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                 aws_secret_access_key="test").create_bucket(Bucket="dvc")
    yield endpoint
    server.stop()


def digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".gitignore"}


S3_CREDENTIALS = "dvc remote modify --local origin access_key_id test && " \
    "dvc remote modify --local origin secret_access_key test"
TRAINING_AND_AFTER = ["train_lstm", "train_vgg16", "fuse", "evaluate", "predict"]


@pytest.fixture(scope="module")
def pushed_repo(tiny_repo, tmp_path_factory, s3_endpoint) -> Path:
    """main: the tiny pipeline run, every output pushed to moto's S3 (`make push`), all of it committed."""
    repo = copy_repo(tiny_repo, tmp_path_factory.mktemp("remote") / "repo")
    add_make(repo)
    sh(f"dvc remote add -d origin s3://dvc && dvc remote modify origin endpointurl {s3_endpoint} && {S3_CREDENTIALS}",
       repo)
    pushed = sh("make push", repo)
    assert "pushed" in pushed.stdout + pushed.stderr
    sh("git add -A && git commit -qm 'main: pipeline run, outputs on the remote'", repo)
    return repo


@pytest.mark.e2e
def test_push_wipe_pull_round_trip(pushed_repo, tmp_path):
    repo = copy_repo(pushed_repo, tmp_path / "repo")
    before = {name: digests(repo / name) for name in ("models", "data/processed")}
    assert before["models"]

    shutil.rmtree(repo / ".dvc/cache")
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    outs = [o["path"] for stage in lock.values() for o in stage.get("outs", []) if not o["path"].startswith("metrics")]
    assert {"data/raw", "data/processed", "models/lstm", "models/vgg16", "models/fusion", "models/bundle.json"} <= set(outs)
    for out in outs:
        (shutil.rmtree if (repo / out).is_dir() else Path.unlink)(repo / out)
    assert "deleted" in sh("dvc status", repo).stdout

    # CI's `make ci-repro` (`dvc repro --pull --allow-missing`): nothing changed, so nothing reruns.
    repro = sh("make ci-repro", repo, extra_env=NO_TRACKING)
    output = repro.stdout + repro.stderr
    assert "dvc repro --pull --allow-missing" in output and "Running stage" not in output, output

    sh("make pull", repo)
    assert {name: digests(repo / name) for name in before} == before
    status = sh("dvc status", repo).stdout
    assert "up to date" in status, status
    # Nothing to rerun: the pulled outputs are exactly what dvc.lock describes.
    assert "didn't change" in sh("dvc repro --dry", repo, extra_env=NO_TRACKING).stdout


@pytest.mark.e2e
def test_ci_on_a_pull_request_that_changes_train_epochs(pushed_repo, tmp_path):
    """CI's pipeline job on a PR: a fresh clone (empty DVC cache, main's outputs on the remote) with
    train.epochs changed: `make ci-repro` pulls what training needs and reruns training and after only;
    the "Report vs base" step, run as written, reports the change against origin/main."""
    clone = tmp_path / "clone"
    sh(f"git clone -q --no-local {pushed_repo} {clone}", tmp_path)
    sh(S3_CREDENTIALS, clone)  # what `make dagshub` writes in CI: credentials in .dvc/config.local only
    assert not (clone / ".dvc/cache").exists() and not (clone / "data/processed").exists()
    params = yaml.safe_load((clone / "params.yaml").read_text())
    assert params["train"]["epochs"] == 3
    params["train"]["epochs"] = 2
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git checkout -qb fewer-epochs && git commit -qam 'train 2 epochs'", clone)

    repro = sh("make ci-repro", clone, extra_env=NO_TRACKING)
    output = repro.stdout + repro.stderr
    assert "dvc repro --pull --allow-missing" in output, output
    assert re.findall(r"Running stage '(\w+)'", output) == TRAINING_AND_AFTER, output
    # download and preprocess did not run: training read main's data/processed, pulled from the remote.
    assert digests(clone / "data/processed") == digests(pushed_repo / "data/processed")
    lock = yaml.safe_load((clone / "dvc.lock").read_text())["stages"]
    main_lock = yaml.safe_load((pushed_repo / "dvc.lock").read_text())["stages"]
    assert {name: lock[name] for name in ("download", "preprocess")} == \
        {name: main_lock[name] for name in ("download", "preprocess")}
    assert lock["train_lstm"]["params"]["params.yaml"]["train.epochs"] == 2
    assert "up to date" in sh("dvc status", clone).stdout

    # The step itself (bash, as GitHub runs `run:`), with the env a pull request into main gives it.
    step = tmp_path / "report_step.sh"
    step.write_text(workflow_step("Report vs base")["run"])
    summary = tmp_path / "summary.md"
    sh(f"bash --noprofile --norc -eo pipefail {step}", clone, extra_env={
        "EVENT_NAME": "pull_request", "BASE_REF": "main", "BEFORE": "", "GITHUB_STEP_SUMMARY": str(summary)})
    report = (clone / "report/report.md").read_text()
    assert summary.read_text() == report
    assert "Workspace vs `origin/main`" in report
    metrics = report.split("### Metrics")[1].split("### Params")[0]
    assert "metrics/train_lstm/metrics.json" in metrics and "best.epochs_run" in metrics, report
    assert re.search(r"train\.epochs\s*\|\s*3\s*\|\s*2\s*\|", report.split("### Params")[1]), report

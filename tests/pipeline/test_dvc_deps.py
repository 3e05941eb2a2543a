"""`dvc.yaml` covers what each stage runs: the modules it imports (derived from the code, lazy imports
included) and the params it reads (recorded while the stage runs); editing any of them makes real
`dvc status` report the stage changed."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import PROJECT, copy_repo, sh

PACKAGE = "product_classifier"
SRC = PROJECT / "src"
DVC_YAML = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"]


def stage_script(stage: str) -> Path:
    match = re.fullmatch(r"python (stages/\w+\.py)", DVC_YAML[stage]["cmd"])
    assert match, f"stage {stage}: cmd is not `python stages/<name>.py`"
    return PROJECT / match.group(1)


def module_file(name: str) -> Path | None:
    """The file of a project module (`product_classifier.x` -> src/product_classifier/x.py), else None."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    base = SRC.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    raise AssertionError(f"{name} is imported but has no file under src/")


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def walk_runtime(tree: ast.AST):
    """ast.walk, minus `if TYPE_CHECKING:` blocks (imports for type checkers only, never run)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo += node.orelse
            continue
        todo += ast.iter_child_nodes(node)


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports anywhere (top level, inside functions, relative or absolute),
    including `from pkg import sub` where `sub` is a module."""
    package = module_name(path) if path.is_relative_to(SRC) else ""
    if package and path.name != "__init__.py":
        package = package.rpartition(".")[0]
    found = set()
    for node in walk_runtime(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name}


def runs(stage: str) -> set[Path]:
    """The stage script and every project module it can run, transitively."""
    return reachable(stage_script(stage))


def reachable(start: Path) -> set[Path]:
    """`start` and every project module it imports, transitively."""
    todo, seen = [start], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported_modules(path):
            # `from product_classifier import paths` names a module; `from .x import f` names a function.
            try:
                file = module_file(name)
            except AssertionError:
                if module_file(name.rpartition(".")[0]) is None:
                    raise
                continue
            if file is not None:
                parts = name.split(".")
                todo += [f for i in range(1, len(parts)) if (f := module_file(".".join(parts[:i])))]
                todo.append(file)
    return seen


def has_code(path: Path) -> bool:
    body = ast.parse(path.read_text()).body
    return bool(body[1:] if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) else body)


def code_deps(stage: str) -> set[str]:
    return {str(p.relative_to(PROJECT)) for p in runs(stage) if has_code(p)}


def declared_code(stage: str) -> set[str]:
    return {d for d in DVC_YAML[stage].get("deps", []) if d.endswith(".py")}


def test_the_import_walk_sees_lazy_imports_across_the_parts():
    """The derivation itself: evaluate's script imports evaluation only inside main(), which reaches
    inference/text.py through the predictor; the packages' docstring-only __init__ files run no code."""
    deps = code_deps("evaluate")
    for module in ("pipeline/evaluation", "inference/predictor", "inference/text", "inference/images",
                   "inference/fusion", "inference/labels", "pipeline/stage", "pipeline/params", "tracking/client"):
        assert f"src/{PACKAGE}/{module}.py" in deps
    for package in ("", "inference", "pipeline", "scoring", "tracking"):
        assert not has_code(SRC / PACKAGE / package / "__init__.py")
    assert "src/product_classifier/pipeline/training.py" not in deps


@pytest.mark.parametrize("stage", ["download", "preprocess", "fuse", "evaluate", "predict"])
def test_only_the_training_stages_run_the_keras_backend_helper(stage):
    """Editing the Keras backend helper reruns the training stages and what follows them, never the data
    stages (the stage wrapper knows nothing of Keras)."""
    assert f"src/{PACKAGE}/pipeline/backend.py" not in code_deps(stage)
    assert f"src/{PACKAGE}/pipeline/backend.py" in code_deps("train_lstm") & code_deps("train_vgg16")


@pytest.mark.parametrize("stage", sorted(DVC_YAML))
def test_every_module_a_stage_runs_is_a_dep_and_no_other(stage):
    derived, declared = code_deps(stage), declared_code(stage)
    assert not derived - declared, f"dvc.yaml stage {stage} misses deps: {sorted(derived - declared)}"
    assert not declared - derived, f"dvc.yaml stage {stage} lists modules it never runs: {sorted(declared - derived)}"


@pytest.mark.parametrize("module", ["pipeline/training", "pipeline/evaluation", "pipeline/fit_fusion",
                                    "pipeline/preprocess", "inference/predictor", "scoring/score"])
def test_training_and_evaluation_know_nothing_of_dvc_or_mlflow(module):
    """The shared library's logic runs without DVC, dvclive or MLflow; the stage scripts wire tracking in."""
    files = reachable(SRC / PACKAGE / f"{module}.py")
    names = {name for f in files for name in imported_modules(f)}
    tracking_names = {n for n in names if n.split(".")[0] in ("dvc", "dvclive", "mlflow", "dagshub")}
    assert not tracking_names, module
    assert not [f for f in files if f.parent.name == "tracking"], module


# --- real DVC: a copy of the reproduced tiny pipeline ------------------------------------------------

@pytest.fixture(scope="module")
def repo_copy(tiny_repo, tmp_path_factory) -> Path:
    """A copy whose outputs nothing rewrites: the param probes below run stages in a copy of their own,
    so that `dvc status` here reports edits only, in whichever order the tests run."""
    copy = tmp_path_factory.mktemp("deps") / "repo"
    copy_repo(tiny_repo, copy)
    assert "up to date" in sh("dvc status", copy).stdout
    return copy


@pytest.fixture()
def probe_copy(tiny_repo, tmp_path) -> Path:
    """Where one param probe runs its stage (which rewrites its outputs): a copy of its own, so that each stage
    reads its inputs as the pipeline left them whatever the tests' order (a retrained model, its ONNX export not
    byte-identical, no longer matches the bundle until fuse runs again, as `dvc repro` would run it)."""
    return copy_repo(tiny_repo, tmp_path / "repo")


def changed_stages(repo: Path) -> set[str]:
    """The stages `dvc status` reports, from the command's own call (`Repo.status`, what `dvc status --json`
    prints) in this process: one DVC start instead of one per edited module."""
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc:
        return {name.split(":")[-1] for name in dvc.status()}


def command_changed_stages(repo: Path) -> set[str]:
    return {name.split(":")[-1] for name in json.loads(sh("dvc status --json", repo).stdout or "{}")}


@pytest.mark.e2e
def test_editing_any_module_a_stage_runs_makes_dvc_status_report_that_stage(repo_copy):
    deps = {stage: code_deps(stage) for stage in DVC_YAML}
    modules = sorted(set().union(*deps.values()))
    assert len(modules) > 15
    for module in modules:
        path = repo_copy / module
        original = path.read_bytes()
        path.write_bytes(original + b"\n# edited\n")
        try:
            expected = {stage for stage in DVC_YAML if module in deps[stage]}
            assert changed_stages(repo_copy) == expected, module
            if module == modules[0]:
                assert command_changed_stages(repo_copy) == expected, module  # the command says the same
        finally:
            path.write_bytes(original)
    assert changed_stages(repo_copy) == command_changed_stages(repo_copy) == set()


def covers(entry: str, name: str) -> bool:
    return name == entry or name.startswith(entry + ".")


@pytest.mark.e2e
@pytest.mark.parametrize("stage", list(DVC_YAML))  # pipeline order
def test_every_param_a_stage_reads_is_declared_and_no_other(probe_copy, stage):
    out = sh(f"{sys.executable} {PROJECT / 'tests/params_probe.py'} {stage}", probe_copy,
             extra_env={"MLFLOW_TRACKING_URI": "none"}).stdout
    probe = json.loads(out.rpartition("PARAMS_READ ")[2])
    # The stage runner picks the Keras backend from train.backend: it changes what a Keras stage computes.
    read = set(probe["read"]) | ({"train.backend"} if probe["keras"] else set())
    declared = DVC_YAML[stage].get("params", [])
    assert read, stage
    assert not [n for n in read if not any(covers(e, n) for e in declared)], f"{stage} reads undeclared params"
    assert not [e for e in declared if not any(covers(e, n) for n in read)], f"{stage} declares params it never reads"


def test_the_served_model_is_declared_as_a_dvc_artifact_whose_manifest_the_fuse_stage_writes():
    """dvc.yaml's `artifacts:` (DVC's model registry convention) names models/, as DVC itself reads it, and the
    bundle serving checks (models/bundle.json) is one of the fuse stage's outs, so dvc.lock records its md5."""
    from product_classifier import paths

    read = ("import json; from dvc.repo import Repo; r = Repo('.'); "  # DVC's own reader, in a process of its own
            "print(json.dumps({n: [a.path, a.type] for n, a in r.artifacts.read()['dvc.yaml'].items()}))")
    out = subprocess.run([sys.executable, "-c", read], cwd=PROJECT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == {"product-classifier": [paths.MODELS.as_posix(), "model"]}
    assert f"{paths.MODELS.as_posix()}/{paths.BUNDLE_FILE}" in DVC_YAML["fuse"]["outs"]

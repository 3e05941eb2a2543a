"""How far the pipeline's results move: the same commit reproduced from scratch in fresh clones.

Each variant clones the repository at one commit into a fresh temporary path (each its own), runs
the whole pipeline there with no DVC cache (`dvc repro`, or `dvc exp run -S ...`), and reads back
the outputs' hashes from its dvc.lock and the test-split metrics. The first variant is the baseline;
every other one is compared with it, output by output (bit-identical or not) and metric by metric.

    python benchmarks/reproducibility.py                       # clone-a, clone-b (another path), jax
    python benchmarks/reproducibility.py --variants clone-a,one-core --rev HEAD~1

Variants: `clone-a`, `clone-b` (the same run in a differently named and deeper path), `jax`
(`-S train.backend=jax`), `one-core` (pinned to one CPU with taskset: the thread pool of a smaller
machine, so floating-point reductions run in another order). About 5 to 10 minutes each on 2 cores.
Not a `bench_*` script, so `make bench` skips it. Figures: docs/reproducibility.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import yaml

from common import header, print_table

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("lstm", "vgg16", "fused")
QUALITY = ("accuracy", "f1_weighted", "f1_macro")
VARIANTS = {
    "clone-a": ("a/repo", "dvc repro", []),
    "clone-b": ("b/another/deeper/checkout", "dvc repro", []),
    "jax": ("c/repo-jax", "dvc exp run -S train.backend=jax", []),
    "one-core": ("d/repo-one-core", "dvc repro", ["taskset", "-c", "0"]),
}


def environment(clone: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(clone / "src")  # the clone's own code, not this checkout's editable install
    env["MLFLOW_TRACKING_URI"] = "none"
    env.pop("KERAS_BACKEND", None)
    return env


def model_contents(clone: Path) -> dict[str, str]:
    """sha256 of each saved model's contents: the .keras zip's weights and config, without what changes
    from one save to the next whatever the model: the zip's entry dates, `metadata.json` (the date
    saved) and the config's `shared_object_id`s (Python object addresses)."""
    digests = {}
    for archive in sorted((clone / "models").glob("*/model.keras")):
        h = hashlib.sha256()
        with zipfile.ZipFile(archive) as zf:
            for name in sorted(n for n in zf.namelist() if n != "metadata.json"):
                data = zf.read(name)
                if name == "config.json":
                    data = re.sub(rb'"shared_object_id": \d+', b'"shared_object_id": 0', data)
                h.update(name.encode() + b"\0" + data)
        digests[f"{archive.parent.relative_to(clone).as_posix()} contents"] = h.hexdigest()
    return digests


def run_variant(name: str, rev: str, home: Path) -> dict:
    where, command, prefix = VARIANTS[name]
    clone = home / where
    clone.parent.mkdir(parents=True)
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(ROOT), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "-q", rev], check=True)
    env = environment(clone)
    start = time.perf_counter()
    result = subprocess.run([*prefix, *command.split()], cwd=clone, env=env, capture_output=True, text=True)
    took = time.perf_counter() - start
    if result.returncode:
        raise SystemExit(f"{name}: `{command}` failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    lock = yaml.safe_load((clone / "dvc.lock").read_text())["stages"]
    outs = {o["path"]: o["md5"] for stage in lock.values() for o in stage.get("outs", []) if not o["path"].startswith("metrics")}
    outs.update(model_contents(clone))
    metrics = json.loads((clone / "metrics/evaluate/metrics.json").read_text())
    return {"variant": name, "path": str(clone), "command": " ".join([*prefix, command]), "seconds": round(took, 1),
            "outs": outs, "quality": {m: {k: metrics[m][k] for k in QUALITY} for m in MODELS}}


def compare(base: dict, other: dict) -> dict:
    identical = [path for path, md5 in other["outs"].items() if base["outs"].get(path) == md5]
    differ = [path for path in other["outs"] if path not in identical]
    deltas = {f"{m}.{k}": round(other["quality"][m][k] - base["quality"][m][k], 4) for m in MODELS for k in QUALITY}
    return {"identical": identical, "differ": differ, "deltas": deltas,
            "max_abs_delta": max(abs(d) for d in deltas.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", default="HEAD", help="commit to reproduce (default: HEAD)")
    parser.add_argument("--variants", default="clone-a,clone-b,jax", help=f"comma-separated, first is the baseline: {', '.join(VARIANTS)}")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}")
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", args.rev], capture_output=True, text=True, check=True).stdout.strip()
    header(f"Reproducibility of commit {rev[:10]}: {', '.join(names)}")
    home = Path(tempfile.mkdtemp(prefix="repro-"))
    try:
        runs = []
        for name in names:
            print(f"running {name} ...", flush=True)
            runs.append(run_variant(name, rev, home))
            print(f"  {runs[-1]['seconds']} s", flush=True)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    base = runs[0]
    rows = []
    for run in runs:
        cmp = compare(base, run)
        row = {"variant": run["variant"], "wall s": run["seconds"],
               "identical to " + base["variant"]: ", ".join(cmp["identical"]) if run is not base else "(baseline)",
               "differ": ", ".join(cmp["differ"]) or "-"}
        for m in MODELS:
            row[f"{m} acc"] = f"{run['quality'][m]['accuracy']:.4f}"
            row[f"{m} F1w"] = f"{run['quality'][m]['f1_weighted']:.4f}"
        row["max |delta|"] = f"{cmp['max_abs_delta']:.4f}"
        rows.append(row)
        run["comparison"] = cmp
    print_table(rows, list(rows[0]))
    if args.json:
        args.json.write_text(json.dumps({"rev": rev, "runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()

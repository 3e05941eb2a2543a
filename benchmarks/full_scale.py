"""Dry run at the real data's size: the `download` (sample generator) and `preprocess` stages
on 84,916 products at 224 px, in a temporary git + DVC repository, then `dvc status` and a
no-op `dvc repro` at that size. Prints wall time and peak memory per step.

    python benchmarks/full_scale.py                      # the real size (about 20 minutes and 33 GB of disk on 2 cores)
    python benchmarks/full_scale.py --size 8500 --keep   # a fraction; keeps the repository

Not a `bench_*` script, so `make bench` skips it; `make bench-full` runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from common import header, print_table
from product_classifier import paths

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import env, make_repo  # noqa: E402  (the tests' repository builder, reused as is)

REAL_SIZE = 84_916
MEMORY_BUDGET_MB = 8 * 1024


class TreeMemory(threading.Thread):
    """Peak of the summed RSS of a process and all its descendants, sampled every `interval` s.

    Shared pages (the memory-mapped image array, libraries) count once per process, so this
    is an upper bound of what the step needs; /usr/bin/time's figure is the largest single one."""

    def __init__(self, pid: int, interval: float = 0.5):
        super().__init__(daemon=True)
        self.root, self.interval, self.peak_mb, self.done = pid, interval, 0.0, threading.Event()

    def run(self):
        while not self.done.is_set():
            try:
                root = psutil.Process(self.root)
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            total = 0
            for proc in procs:
                with contextlib.suppress(psutil.NoSuchProcess):
                    total += proc.memory_info().rss
            self.peak_mb = max(self.peak_mb, total / 1024**2)
            self.done.wait(self.interval)


def measure(name: str, cmd: str, repo: Path, log: Path) -> dict:
    """Run `cmd` under /usr/bin/time -v; wall time, peak RSS (largest process, whole tree), stage time."""
    with open(log, "a") as out:
        out.write(f"\n### {name}: {cmd}\n")
        out.flush()
        start = time.perf_counter()
        proc = subprocess.Popen(["/usr/bin/time", "-v", "bash", "-c", cmd], cwd=repo, env=env(),
                                stdout=out, stderr=subprocess.STDOUT)
        sampler = TreeMemory(proc.pid)
        sampler.start()
        rc = proc.wait()
        wall = time.perf_counter() - start
        sampler.done.set()
        sampler.join()
    text = log.read_text().rsplit(f"### {name}:", 1)[1]
    if rc != 0:
        raise SystemExit(f"{name} failed ({rc}); see {log}:\n{text[-3000:]}")
    max_rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    stage = re.search(r"done in ([\d.]+)s", text)
    return {
        "step": name,
        "wall_s": round(wall, 1),
        "stage_s": float(stage.group(1)) if stage else "",
        "peak_rss_largest_mb": round(int(max_rss.group(1)) / 1024) if max_rss else "",
        "peak_rss_tree_mb": round(sampler.peak_mb),
    }


def du_mb(path: Path) -> int:
    out = subprocess.run(["du", "-sm", str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=REAL_SIZE, help="training products (data.sample_size)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--workdir", type=Path, default=None, help="where to build the repository (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the repository (and its DVC cache) afterwards")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    header(f"full-scale dry run: download + preprocess, {args.size:,} products at {args.image_size} px")
    work = Path(tempfile.mkdtemp(prefix="full-scale-", dir=args.workdir))
    repo = make_repo(work / "repo", {"data": {"sample_size": args.size},
                                     "preprocess": {"image_size": args.image_size, "max_len": 48}})
    log = work / "log.txt"
    print(f"repository: {repo}\nlog: {log}\n", flush=True)
    steps = [
        ("download", "dvc repro download"),
        ("preprocess", "dvc repro preprocess"),
        ("dvc status", "dvc status"),
        ("dvc status (2nd)", "dvc status"),
        ("no-op dvc repro preprocess", "dvc repro preprocess"),
    ]
    rows = []
    try:
        for name, cmd in steps:
            rows.append(measure(name, cmd, repo, log))
            print(json.dumps(rows[-1]), flush=True)
        sizes = {f"{p} MiB": du_mb(repo / p) for p in ("data/raw", "data/processed", ".dvc/cache")}
        images = len(list(paths.image_dir(repo / paths.RAW, "train").iterdir()))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print_table(rows, ["step", "wall_s", "stage_s", "peak_rss_largest_mb", "peak_rss_tree_mb"])
    print(f"training images: {images:,}; disk: {sizes}")
    peak = max(r["peak_rss_tree_mb"] for r in rows)
    print(f"peak memory of any step: {peak:,} MiB ({'under' if peak < MEMORY_BUDGET_MB else 'OVER'} the 8 GiB budget)")
    if args.json:
        args.json.write_text(json.dumps({"size": args.size, "image_size": args.image_size, "steps": rows,
                                         "disk_mb": sizes, "train_images": images}, indent=2))


if __name__ == "__main__":
    main()

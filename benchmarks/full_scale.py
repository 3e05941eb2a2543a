"""The pipeline at the real data's size, through the real source path, on a stand-in of the real host.

The stand-in is the sample generator at the requested size and the real shape (the real class
proportions and text quirks, 500x500 JPEGs, 13,812 unlabelled products per 84,916 labelled ones),
packed as the host publishes it (the three CSVs and `images_low.zip`: `image_train/` and `image_test/`
at its root, an AppleDouble `__MACOSX/` entry per image) and served over HTTP from 127.0.0.1. The repository is this project's pipeline with its
own params.yaml, except `data.source: huggingface` pointed at the stand-in. Each stage runs alone
(`dvc repro --single-item`), measured: wall time, the stage's own "done in" time, peak RSS (largest
process and whole process tree) and the disk it leaves; then `dvc status` and a no-op `dvc repro`
(median of 5 each).

    python benchmarks/full_scale.py                         # every stage at the real size (84,916 products)
    python benchmarks/full_scale.py --stages download preprocess --image-size 224   # the earlier dry run
    python benchmarks/full_scale.py --sizes 2700 10800 27000   # `make bench-scale`: growth per stage

With `--sizes` the pipeline runs at each size in turn and the table adds, per stage, the growth exponent
between consecutive sizes, log(time ratio) / log(size ratio): 1 is linear, over 1 grows faster than the
data. Not a `bench_*` script, so `make bench` skips it.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import psutil

from common import header, machine, print_table
from product_classifier import paths
from product_classifier.inference.imagestore import FIXED_TIME
from product_classifier.pipeline.sample import generate

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import env, make_repo, sh  # noqa: E402  (the tests' repository builder, reused as is)

REAL_SIZE, REAL_TEST_SIZE = 84_916, 13_812
STAGES = ("download", "preprocess", "train_lstm", "train_vgg16", "fuse", "evaluate", "predict")
MEMORY_BUDGET_MB = 8 * 1024
ARCHIVE = "images_low.zip"
APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(4070)  # the 4 KiB header a Mac writes


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
    if not path.exists():
        return 0
    out = subprocess.run(["du", "-sm", str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def standin(folder: Path, size: int, test_size: int, seed: int) -> dict:
    """The real host's files for `size` labelled and `test_size` unlabelled products, in `folder`."""
    generated = folder / "generated"
    generated.mkdir(parents=True)
    start = time.perf_counter()
    generate(generated, size, seed, n_test=test_size)
    for name in (paths.X_TRAIN, paths.Y_TRAIN, paths.X_TEST):
        shutil.move(generated / name, folder / name)
    # The generator's archive already has the real one's layout: image_train/ and image_test/ at its root, stored.
    # The real one was zipped on a Mac: an AppleDouble entry under __MACOSX/ beside each image (SPEC.md), added too.
    shutil.move(generated / paths.IMAGE_ARCHIVE, folder / ARCHIVE)
    with zipfile.ZipFile(folder / ARCHIVE, "a", zipfile.ZIP_STORED) as zf:
        images = [name for name in zf.namelist() if not name.endswith("/")]
        for name in images:
            folder_, file = name.rsplit("/", 1)
            zf.writestr(zipfile.ZipInfo(f"__MACOSX/{folder_}/._{file}", FIXED_TIME), APPLEDOUBLE)
    shutil.rmtree(generated)
    return {"seconds": round(time.perf_counter() - start, 1), "archive_mb": round((folder / ARCHIVE).stat().st_size / 2**20)}


@contextlib.contextmanager
def serving(folder: Path):
    """`folder` over HTTP on 127.0.0.1 (a free port), with Content-Length and Last-Modified as a CDN sends."""
    handler = functools.partial(QuietHandler, directory=str(folder))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/"
        finally:
            server.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def run_pipeline(work: Path, size: int, test_size: int, image_size: int, stages: list[str], seed: int,
                 host: Path | None = None) -> dict:
    """The stand-in at `size` (or the one kept in `host`), served; a repository pointed at it; each stage measured,
    then DVC's own cost."""
    if host is None:
        host = work / "host"
        made = standin(host, size, test_size, seed)
    else:
        made = {"seconds": "", "archive_mb": round((host / ARCHIVE).stat().st_size / 2**20), "reused": str(host)}
    print(f"stand-in: {size:,} + {test_size:,} products, {ARCHIVE} {made['archive_mb']:,} MiB, "
          + (f"generated and packed in {made['seconds']} s" if made["seconds"] else f"kept in {host}"), flush=True)
    log = work / "log.txt"
    rows = []
    with serving(host) as url:
        repo = make_repo(work / "repo", {"data": {"source": "huggingface", "url": url},
                                         "preprocess": {"image_size": image_size}}, tiny=False)
        print(f"repository: {repo}\nlog: {log}", flush=True)
        for name in stages:
            rows.append(measure(name, f"dvc repro --single-item {name}", repo, log))
            print(json.dumps(rows[-1]), flush=True)
    sh("git add -A && git commit -qm 'pipeline run'", repo)
    noop = "dvc repro" if list(stages) == list(STAGES) else f"dvc repro --single-item {' '.join(stages)}"
    for name, cmd in (("dvc status", f"dvc status {' '.join(stages)}"), ("no-op dvc repro", noop)):
        runs = sorted((measure(name, cmd, repo, log) for _ in range(5)), key=lambda r: r["wall_s"])
        rows.append(runs[2])  # the median of 5: DVC's own cost on a shared machine
        print(json.dumps(rows[-1]), flush=True)
    disk = {p: du_mb(repo / p) for p in ("data/raw", "data/processed", "models", ".dvc/cache", str(paths.DOWNLOAD_CACHE))}
    files = sum(1 for _ in (repo / paths.RAW).rglob("*"))  # what DVC checks on every `dvc status`
    return {"size": size, "test_size": test_size, "image_size": image_size, "standin": made, "steps": rows,
            "disk_mb": disk, "raw_files": files, "metrics": metrics(repo)}


def metrics(repo: Path) -> dict:
    path = repo / paths.EVALUATION / paths.METRICS_FILE
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    return {model: data[model]["f1_weighted"] for model in ("fused", paths.LSTM, paths.VGG16)}


def exponent(small: float, big: float, n_small: int, n_big: int) -> float | str:
    if not small or not big:
        return ""
    return round(math.log(big / small) / math.log(n_big / n_small), 2)


def growth_table(runs: list[dict]) -> list[dict]:
    """Per step: time and tree peak memory at each size, and the growth exponent between consecutive sizes and,
    with three sizes or more, between the first and the last (one run's noise at a middle size moves it least)."""
    pairs = list(zip(runs, runs[1:], strict=False)) + ([(runs[0], runs[-1])] if len(runs) > 2 else [])
    table = []
    for i, step in enumerate(r["step"] for r in runs[0]["steps"]):
        row: dict = {"step": step}
        for run in runs:
            s = run["steps"][i]
            row[f"s@{run['size']}"] = s["stage_s"] or s["wall_s"]
            row[f"MiB@{run['size']}"] = s["peak_rss_tree_mb"]
        for a, b in pairs:
            sa, sb = a["steps"][i], b["steps"][i]
            row[f"exp {a['size']}->{b['size']}"] = exponent(sa["stage_s"] or sa["wall_s"], sb["stage_s"] or sb["wall_s"],
                                                            a["size"], b["size"])
        table.append(row)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=REAL_SIZE, help="labelled products (X_train)")
    parser.add_argument("--sizes", type=int, nargs="+", help="run at each of these sizes and print growth exponents")
    parser.add_argument("--image-size", type=int, default=64, help="preprocess.image_size")
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--workdir", type=Path, default=None, help="where to build (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the repositories (and their DVC caches)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--host", type=Path, default=None,
                        help="a stand-in an earlier run kept (its host/ folder, same size and seed): served as it is")
    args = parser.parse_args()

    sizes = args.sizes or [args.size]
    header(f"the pipeline on a local stand-in of the real host: {', '.join(f'{n:,}' for n in sizes)} products, "
           f"{args.image_size} px, stages {' '.join(args.stages)}")
    runs = []
    for size in sizes:
        work = Path(tempfile.mkdtemp(prefix=f"full-scale-{size}-", dir=args.workdir))
        try:
            test_size = round(size * REAL_TEST_SIZE / REAL_SIZE)
            runs.append(run_pipeline(work, size, test_size, args.image_size, args.stages, args.seed, args.host))
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
        run = runs[-1]
        print()
        print_table(run["steps"], ["step", "wall_s", "stage_s", "peak_rss_largest_mb", "peak_rss_tree_mb"])
        print(f"{size:,} products: files under data/raw {run['raw_files']:,}; disk MiB {run['disk_mb']}; "
              f"test f1_weighted {run['metrics']}")
        peak = max(r["peak_rss_tree_mb"] for r in run["steps"])
        print(f"peak memory of any step: {peak:,} MiB ({'under' if peak < MEMORY_BUDGET_MB else 'OVER'} the 8 GiB budget)",
              flush=True)
    if len(runs) > 1:
        table = growth_table(runs)
        print("\ngrowth per step (time: the stage's own 'done in' seconds, else wall; memory: whole process tree)")
        print_table(table, list(table[0]))
        stage_rows = table[:len(args.stages)]
        first_last = [f"exp {runs[0]['size']}->{runs[-1]['size']}"] if len(runs) > 2 else []
        for label, keys in (("between consecutive sizes", [k for k in table[0] if k.startswith("exp") and k not in first_last]),
                            ("first to last size", first_last)):
            worst = max((row[k] for row in stage_rows for k in keys if row[k] != ""), default=None)
            if worst is not None:
                print(f"largest time exponent of a stage, {label}: {worst}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "runs": runs}, indent=2))


if __name__ == "__main__":
    main()

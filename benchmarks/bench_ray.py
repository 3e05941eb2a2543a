"""Batch scoring on Ray against the local engine: the same products scored by `product-classifier-predict`
(local engine) and with `--engine ray` (a local Ray started by the command, one and two actors), each as
its own process from start to written file, on the input and on the input repeated 4x.

Prints products/s and the peak memory of the whole process tree (the command, and for Ray its raylet, GCS
and actors: RSS summed, sampled every 0.1 s; Ray's shared-memory object store counts where it is touched).

    python benchmarks/bench_ray.py [--models models] [--csv data/raw/X_test_update.csv]
                                   [--images zip://image_test::data/raw/images.zip] [--products 270] [--growth 4]
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import psutil

from common import header, print_table
from product_classifier import paths

ROOT = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).parent / "product-classifier-predict"
SETUPS = {"local": [], "ray, 1 actor": ["--engine", "ray", "--actors", "1"],
          "ray, 2 actors": ["--engine", "ray", "--actors", "2"]}


def tree_rss_mb(proc: psutil.Process) -> float:
    total = 0
    with contextlib.suppress(psutil.Error):
        for member in (proc, *proc.children(recursive=True)):
            with contextlib.suppress(psutil.Error):
                total += member.memory_info().rss
    return total / 1024**2


def run(args: list[str]) -> tuple[float, float]:
    """(wall seconds, peak MiB of the process tree) of one command."""
    start = time.perf_counter()
    proc = subprocess.Popen([str(CLI), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak, watched = 0.0, psutil.Process(proc.pid)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss_mb(watched))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{err[-2000:]}")
    return wall, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--csv", type=Path, default=ROOT / "data/raw/X_test_update.csv")
    parser.add_argument("--images", default=paths.images_url(ROOT / paths.RAW, "test"),
                        help="a folder or an fsspec URL (default: data/raw's archive, image_test/)")
    parser.add_argument("--products", type=int, default=270, help="products scored: the CSV's first ones, "
                        "the CSV repeated if it has fewer")
    parser.add_argument("--growth", type=int, default=4, help="the larger input: the products repeated this often")
    args = parser.parse_args()
    header("Batch scoring: local engine against Ray Data actors")
    x = pd.read_csv(args.csv, index_col=0)
    x = pd.concat([x] * -(-args.products // len(x)), ignore_index=True).head(args.products)  # repeated if short
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for times in (1, args.growth):
            products = Path(tmp, f"products-{times}.csv")
            pd.concat([x] * times, ignore_index=True).to_csv(products)
            n = len(x) * times
            outs = {}
            for name, extra in SETUPS.items():
                outs[name] = Path(tmp, f"{name.replace(' ', '').replace(',', '-')}-{times}.csv")
                wall, peak = run([str(products), str(args.images), "--models", str(args.models),
                                  "-o", str(outs[name]), *extra])
                rows.append({"engine": name, "products": n, "wall s": wall, "products/s": n / wall,
                             "peak MiB": peak})
                print(f"  {name:14s} {n:6d} products: {wall:.1f} s, peak {peak:.0f} MiB", flush=True)
            base = pd.read_csv(outs["local"])
            for name, out in outs.items():  # the figures are for the same answers
                other = pd.read_csv(out)
                assert other["prdtypecode"].equals(base["prdtypecode"]), name
    print()
    print_table(rows, ["engine", "products", "wall s", "products/s", "peak MiB"])


if __name__ == "__main__":
    main()

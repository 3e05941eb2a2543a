"""ONNX export: tf2onnx's default optimizers (the baseline) against the project's short list (`export._optimizers`).

Both served models, built as the training stages build them (VGG16 at 64 px with its head, the LSTM), untrained:
the export's cost does not depend on the weights' values. Each export runs in its own process, pairs alternate,
so peak memory is the export's own; then both files score the same batch: outputs, graph size, latency.

    python benchmarks/bench_export.py [--runs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import header, peak_rss_mb, print_table

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

VARIANTS = ("default", "ours")


def _batch(name: str):
    """The input both exports of `name` score: 16 images or 64 token rows."""
    import numpy as np

    rng = np.random.default_rng(1)
    if name == "vgg16":
        return rng.integers(0, 256, (16, 64, 64, 3), np.uint8)
    return rng.integers(1, 20000, (64, 48)).astype("int32")


def _model(name: str):
    import numpy as np

    from product_classifier.pipeline import models
    from product_classifier.pipeline.params import load_params

    train = load_params(Path(__file__).resolve().parents[1] / "params.yaml").train  # the project's own values
    if name == "vgg16":
        features = np.random.default_rng(0).normal(size=(64, 512)).astype("float32")
        return models.compose(models.build_vgg16_base(64, "none"), models.build_image_head(features, train.vgg16))
    return models.build_lstm(20000, 48, train.lstm)


def child(name: str, variant: str, out: Path) -> None:
    import keras

    from product_classifier.pipeline import export

    keras.utils.set_random_seed(0)
    model = _model(name)
    model(_batch(name), training=False)
    before = peak_rss_mb()
    start = time.perf_counter()
    out.write_bytes(export._onnx_bytes_tf(model, None if variant == "default" else export._optimizers()))
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_mb": peak_rss_mb(), "before_mb": before}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2, help="exports per variant and model (alternating)")
    parser.add_argument("--child", nargs=3, metavar=("MODEL", "VARIANT", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child[0], args.child[1], Path(args.child[2]))

    import numpy as np
    import onnx

    from product_classifier.inference.runtime import onnx_forward

    header("ONNX export: tf2onnx's default optimizers vs the project's list")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("vgg16", "lstm"):
            runs = {v: [] for v in VARIANTS}
            for _ in range(args.runs):
                for variant in VARIANTS:
                    out = Path(tmp) / f"{name}-{variant}.onnx"
                    done = subprocess.run([sys.executable, __file__, "--child", name, variant, str(out)],
                                          capture_output=True, text=True, check=True)
                    runs[variant].append(json.loads(done.stdout.strip().splitlines()[-1]))
            batch = _batch(name)  # the models themselves are built only in the children
            forwards = {v: onnx_forward(Path(tmp) / f"{name}-{v}.onnx", threads=1) for v in VARIANTS}
            outputs = {v: f(batch) for v, f in forwards.items()}
            latency = {v: [] for v in VARIANTS}
            for _ in range(20):
                for v, f in forwards.items():
                    start = time.perf_counter()
                    f(batch)
                    latency[v].append(time.perf_counter() - start)
            for v in VARIANTS:
                graph = onnx.load(str(Path(tmp) / f"{name}-{v}.onnx")).graph
                rows.append({"model": name, "optimizers": v,
                             "export s (median)": statistics.median(r["seconds"] for r in runs[v]),
                             "peak MiB": max(r["peak_mb"] for r in runs[v]),
                             "before export MiB": max(r["before_mb"] for r in runs[v]),
                             "nodes": len(graph.node), "batch": len(batch),
                             "latency ms (median of 20)": statistics.median(latency[v]) * 1e3,
                             "max diff vs default": f"{float(np.abs(outputs[v] - outputs['default']).max()):.1e}"})
    print_table(rows, list(rows[0]))


if __name__ == "__main__":
    main()

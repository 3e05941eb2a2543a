"""The image model's cost in FLOPs, what this CPU achieves on it, and an estimate of one GPU's time.

No GPU was lent to measure on, so the GPU figures are an estimate and printed as one. The FLOPs are counted from
the model's own layers (2 x the multiply-adds of every convolution and dense layer: the frozen VGG16 base is
about 31 GFLOPs per image at 224 px, the published figure). The CPU throughput is measured on the stage's own
code path (`training.base_features`: batches of 128 from a uint8 array). The GPU time is those FLOPs at the
effective throughputs given on the command line (default: 20 and 100 TFLOP/s, a range for one H100: about 30%
of its 67 TFLOP/s FP32 peak, and 20% of its 495 TFLOP/s dense TF32 tensor-core peak, which TensorFlow uses for
convolutions by default). Only `train_vgg16`'s feature pass is estimated: it is the stage's dominant cost, and
`fuse`, `evaluate` and `predict` score through ONNX Runtime's CPU build on any machine.

    python benchmarks/gpu_estimate.py                       # 64 and 224 px, the real size's train + val images
    python benchmarks/gpu_estimate.py --sizes 64 --images 256 --gpu-tflops 40
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from common import header, print_table
from full_scale import REAL_SIZE, ROOT


def flops(model) -> int:
    """2 x multiply-adds of every Conv2D and Dense layer, nested models included (pooling and activations left out)."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += flops(layer)
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            _, h, w, _ = layer.output.shape
            total += 2 * h * w * kh * kw * cin * cout
        elif isinstance(layer, keras.layers.Dense):
            cin, cout = layer.kernel.shape
            total += 2 * cin * cout
    return int(total)


def cpu_throughput(base, size: int, n: int) -> float:
    """Images per second of the stage's feature pass over `n` random uint8 images (one warm-up batch first)."""
    from product_classifier.pipeline.training import base_features

    images = np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    base_features(base, images, np.arange(min(n, 128)))
    start = time.perf_counter()
    base_features(base, images, np.arange(n))
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224], help="image sizes (px)")
    parser.add_argument("--images", type=int, default=512, help="images timed on the CPU at 64 px (fewer at 224 px)")
    parser.add_argument("--products", type=int, default=REAL_SIZE, help="labelled products of the run estimated")
    parser.add_argument("--gpu-tflops", type=float, nargs="+", default=[20.0, 100.0], help="effective TFLOP/s")
    args = parser.parse_args()

    from product_classifier.pipeline.models import build_vgg16_base
    from product_classifier.pipeline.params import load_params

    header("VGG16 feature pass: FLOPs, this CPU's throughput, and one GPU's (estimated)")
    # train_vgg16 forwards the train and val splits: all but params.yaml's test share
    forwarded = round(args.products * (1 - load_params(ROOT / "params.yaml").preprocess.test_size))
    rows = []
    for size in args.sizes:
        base = build_vgg16_base(size, "none")
        per_image = flops(base)
        n = max(64, round(args.images * (64 / size) ** 2))  # the same work per size, about
        ips = cpu_throughput(base, size, n)
        row = {"px": size, "GFLOP/image": per_image / 1e9, "CPU images/s": ips,
               "CPU GFLOP/s": ips * per_image / 1e9, "timed images": n,
               f"CPU s for {forwarded:,}": forwarded / ips}
        for tflops in args.gpu_tflops:
            row[f"GPU s @{tflops:g} TFLOP/s (estimate)"] = forwarded * per_image / (tflops * 1e12)
        rows.append(row)
        print(rows[-1], flush=True)
    print()
    print_table(rows, list(rows[0]))
    print(f"{forwarded:,} images: the train and val splits of {args.products:,} products, the images train_vgg16 "
          "forwards once (then cached in .cache/features/). GPU figures are FLOPs / the stated throughput: an "
          "estimate, not a measurement.")


if __name__ == "__main__":
    main()

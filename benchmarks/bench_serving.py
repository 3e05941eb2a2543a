"""Serving speed against TensorFlow's own forward pass, in one run, side by side.

1. Bare forward passes, in this process, interleaved: the Keras models as TensorFlow runs them
   (`compile_inference`: a `tf.function`), and the served runtime (ONNX Runtime, `runtime.py`):
   the image model at batch 1 and 32, the text model at batch 1.
2. Over HTTP: `serving.app` under uvicorn on 127.0.0.1 with the pipeline's default model, served by
     tensorflow  the Keras models on TensorFlow (what was served before), micro-batching on
     onnx        what is served: ONNX Runtime, micro-batching on (the default settings)
   A load generator in this process sends /predict (text + a 500x500 JPEG) from 1 and 32 concurrent
   clients and prints p50/p95/p99 latency, throughput and errors.
3. The serving image's size, from podman when the image exists.

    python benchmarks/bench_serving.py [--requests 200] [--clients 1,32] [--rounds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from common import header, print_table
from product_classifier import paths

ROOT = Path(__file__).resolve().parents[1]
USER, PASSWORD = "bench", secrets.token_urlsafe(16)
VARIANTS = ("tensorflow", "onnx")
IMAGE_TAGS = ("localhost/product-classifier-serving:test", "localhost/product-classifier-serving:local")


# -- the server side: `python bench_serving.py --serve VARIANT` --------------------------------------
def serve(variant: str, port: int) -> None:
    import uvicorn

    from product_classifier.predictor import Predictor
    from serving.app import create_app

    loader = Predictor.load_keras if variant == "tensorflow" else Predictor.load
    uvicorn.run(create_app(loader=loader), host="127.0.0.1", port=port, access_log=False, log_level="warning")


# -- bare forward passes ---------------------------------------------------------------------------------
def bare_forward(rounds: int) -> list[dict]:
    """ms per call of each model's forward pass, TensorFlow vs ONNX Runtime, medians of interleaved rounds."""
    from product_classifier.predictor import load_keras_steps, load_onnx_steps

    tf_text, vocab, tf_image, size = load_keras_steps(ROOT / paths.MODELS)
    ort_text, _, ort_image, _ = load_onnx_steps(ROOT / paths.MODELS)
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, vocab.size, (1, vocab.max_len)).astype("int32")
    images = {n: rng.integers(0, 256, (n, size, size, 3)).astype("float32") for n in (1, 32)}
    cases = {("image", 1): lambda f: f["image"](images[1]), ("image", 32): lambda f: f["image"](images[32]),
             ("text", 1): lambda f: f["text"](tokens)}
    runtimes = {"tensorflow": {"text": tf_text, "image": tf_image}, "onnx": {"text": ort_text, "image": ort_image}}
    times: dict = {(r, c): [] for r in runtimes for c in cases}
    for fns in runtimes.values():  # warm-up (traces, allocations)
        for case in cases.values():
            case(fns), case(fns)
    for _ in range(rounds):
        for runtime, fns in runtimes.items():
            for key, case in cases.items():
                start = time.perf_counter()
                case(fns)
                times[runtime, key].append((time.perf_counter() - start) * 1000)
    return [{"runtime": r, "model": m, "batch": b, "ms/call": statistics.median(times[r, (m, b)]),
             "ms/item": statistics.median(times[r, (m, b)]) / b, "items/s": 1000 * b / statistics.median(times[r, (m, b)])}
            for r in runtimes for (m, b) in cases]


def image_size() -> str:
    """The serving image's size from podman, or why there is none."""
    if not shutil.which("podman"):
        return "podman not installed: no serving image measured"
    for tag in IMAGE_TAGS:
        out = subprocess.run(["podman", "image", "inspect", tag, "--format", "{{.Size}}"], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip():
            return f"{tag}: {int(out.stdout.strip()) / 1e6:,.0f} MB"
    return "no serving image built (`make container-test` builds one)"


# -- the client side ------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(variant: str, workdir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "MODELS_DIR": str(ROOT / "models"), "DVC_LOCK_PATH": str(ROOT / "dvc.lock"),
           "SECRET_KEY": secrets.token_urlsafe(48), "TEST_USER": USER, "TEST_USER_PASSWORD": PASSWORD,
           "RATE_LIMIT_PREDICT": "100000000/minute", "SERVING_LOGGER_PATH": str(workdir / f"{variant}.log"),
           "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    out = (workdir / f"{variant}.stdout").open("w")
    proc = subprocess.Popen([sys.executable, __file__, "--serve", variant, "--port", str(port)], cwd=workdir,
                            env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{variant} server exited:\n{(workdir / f'{variant}.stdout').read_text()[-3000:]}")
        try:
            if httpx.get(f"{base}/health/ready", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"{variant} server not ready after 180 s")


async def load(base: str, token: str, image: bytes, clients: int, requests: int) -> dict:
    """`requests` /predict calls spread over `clients` concurrent connections."""
    latencies: list[float] = []
    errors = 0
    todo = iter(range(requests))
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:

        async def worker():
            nonlocal errors
            for i in todo:
                start = time.perf_counter()
                response = await client.post("/predict", data={"designation": f"Piscine tubulaire {i} m"},
                                              files={"image": ("p.jpg", image, "image/jpeg")}, headers=headers)
                latencies.append((time.perf_counter() - start) * 1000)
                errors += response.status_code != 200

        for _ in range(3):  # warm up connections and the compiled functions' shapes
            await client.post("/predict", data={"designation": "warm up"}, files={"image": ("p.jpg", image)},
                              headers=headers)
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"p50": q[49], "p95": q[94], "p99": q[98], "rps": len(latencies) / elapsed, "errors": errors}


def model_calls(base: str) -> tuple[float, float]:
    """(forward passes, predictions) so far, from the server's own metrics."""
    text = httpx.get(f"{base}/metrics").text
    count = total = 0.0
    for line in text.splitlines():
        if line.startswith('model_inference_seconds_count{role="champion",stage="model"'):
            count = float(line.split()[-1])
        elif line.startswith("model_predictions_total{") and 'role="champion"' in line:
            total += float(line.split()[-1])
    return count, total


def ensure_models() -> None:
    """The default model, as `make repro` leaves it (a no-op when up to date)."""
    result = subprocess.run(["dvc", "repro", "--quiet"], cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"dvc repro failed: {result.stderr[-2000:]}")


def http(levels: list[int], requests: int) -> list[dict]:
    image = next(paths.image_dir(ROOT / paths.RAW, "test").glob("*.jpg")).read_bytes()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for variant in VARIANTS:
            proc, base = start(variant, Path(tmp))
            try:
                token = httpx.post(f"{base}/token", data={"username": USER, "password": PASSWORD}).json()["access_token"]
                for clients in levels:
                    before = model_calls(base)
                    result = asyncio.run(load(base, token, image, clients, requests))
                    after = model_calls(base)
                    passes, predictions = after[0] - before[0], after[1] - before[1]
                    rows.append({"variant": variant, "clients": clients, **result,
                                 "items/pass": predictions / passes if passes else 0.0})
                    print(f"  {variant:10s} {clients:3d} clients: p50 {result['p50']:.1f} ms, "
                          f"{result['rps']:.0f} req/s, {result['errors']} errors", flush=True)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--requests", type=int, default=200, help="requests per concurrency level (default 200)")
    parser.add_argument("--clients", default="1,32", help="concurrency levels (default 1,32)")
    parser.add_argument("--rounds", type=int, default=30, help="interleaved rounds of bare forward passes (default 30)")
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve, args.port)

    header("serving: TensorFlow's bare forward vs ONNX Runtime, and /predict over HTTP")
    ensure_models()
    bare = bare_forward(args.rounds)
    print_table(bare, ["runtime", "model", "batch", "ms/call", "ms/item", "items/s"])
    levels = [int(c) for c in args.clients.split(",")]
    rows = http(levels, args.requests)
    print()
    print_table(rows, ["variant", "clients", "p50", "p95", "p99", "rps", "errors", "items/pass"])
    size = image_size()
    print(f"serving image: {size}")
    f = {(r["runtime"], r["model"], r["batch"]): r for r in bare}
    by = {(r["variant"], r["clients"]): r for r in rows}
    one, many = min(levels), max(levels)
    tf_both = f["tensorflow", "image", 1]["ms/call"] + f["tensorflow", "text", 1]["ms/call"]
    tf_b32 = f["tensorflow", "image", 32]["items/s"]
    print()
    print_table([
        {"figure": "TF bare forward, both models, batch 1 (ms)", "tensorflow": tf_both,
         "onnx": f["onnx", "image", 1]["ms/call"] + f["onnx", "text", 1]["ms/call"]},
        {"figure": "image model bare, batch 32 (items/s)", "tensorflow": tf_b32, "onnx": f["onnx", "image", 32]["items/s"]},
        {"figure": f"HTTP p50, {one} client (ms)", "tensorflow": by["tensorflow", one]["p50"], "onnx": by["onnx", one]["p50"]},
        {"figure": f"HTTP p99, {one} client (ms)", "tensorflow": by["tensorflow", one]["p99"], "onnx": by["onnx", one]["p99"]},
        {"figure": f"HTTP throughput, {many} clients (req/s)", "tensorflow": by["tensorflow", many]["rps"],
         "onnx": by["onnx", many]["rps"]},
    ], ["figure", "tensorflow", "onnx"])
    print(f"target 1: served (onnx) 1-client p50 {by['onnx', one]['p50']:.1f} ms < TF bare forward of both models "
          f"{tf_both:.1f} ms: {'met' if by['onnx', one]['p50'] < tf_both else 'NOT met'}")
    ratio = by["onnx", many]["rps"] / tf_b32
    print(f"target 2: served {many}-client throughput {by['onnx', many]['rps']:.0f} req/s = {ratio:.2f}x TF bare "
          f"batch-32 image throughput {tf_b32:.0f}/s (target >= 1.2x): {'met' if ratio >= 1.2 else 'NOT met'}; "
          f"errors {sum(r['errors'] for r in rows)}")


if __name__ == "__main__":
    main()

"""Serving speed against TensorFlow's own forward pass, in one run, side by side.

1. Bare forward passes, in this process, interleaved: the Keras models as TensorFlow runs them
   (`compile_inference`: a `tf.function`), the served runtime (ONNX Runtime, `runtime.py`) on the
   float models, and the image model quantized to INT8 (`quantize.py`, as `quantize.int8: true` makes
   the fuse stage do it, calibrated on training images): the image model at batch 1 and 32, the text
   model at batch 1.
2. Over HTTP: `serving.app` under uvicorn on 127.0.0.1 with the pipeline's default model, served by
     tensorflow  the Keras models on TensorFlow (what was served before), micro-batching on
     onnx        ONNX Runtime, float models (the default parameters)
     int8        ONNX Runtime, INT8 image model (`dvc exp run -S quantize.int8=true`)
   A load generator in this process (raw HTTP/1.1 on keep-alive sockets: cheaper than the server it
   measures) sends /predict (text + a 500x500 JPEG) from 1 and 32 concurrent clients and prints
   p50/p95/p99 latency, throughput and errors.
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
from functools import partial
from pathlib import Path

import httpx
import numpy as np

from common import first_image, header, print_table
from product_classifier import paths

ROOT = Path(__file__).resolve().parents[1]
USER, PASSWORD = "bench", secrets.token_urlsafe(16)
VARIANTS = ("tensorflow", "onnx", "int8")
INT8_ENV = "BENCH_INT8_MODEL"  # the INT8 image model the `int8` server loads
IMAGE_TAGS = ("localhost/product-classifier-serving:test", "localhost/product-classifier-serving:local")


# -- the server side: `python bench_serving.py --serve VARIANT` --------------------------------------
def serve(variant: str, port: int) -> None:
    import uvicorn

    from product_classifier.inference.predictor import Predictor
    from product_classifier.pipeline.keras_reference import load_keras
    from serving.app import create_app

    loader = {"tensorflow": load_keras, "onnx": partial(Predictor.load, image_model=f"{paths.VGG16}/{paths.ONNX_FILE}"),
              "int8": partial(Predictor.load, image_model=os.environ.get(INT8_ENV))}[variant]
    uvicorn.run(create_app(loader=loader), host="127.0.0.1", port=port, access_log=False, log_level="warning")


# -- bare forward passes ---------------------------------------------------------------------------------
def int8_model(workdir: Path) -> Path:
    """The image model quantized as the fuse stage does with `quantize.int8: true` (same calibration)."""
    from product_classifier.pipeline.fit_fusion import quantize_image
    from product_classifier.pipeline.params import load_params
    from product_classifier.pipeline.processed import Processed

    p = load_params(ROOT / "params.yaml")
    out = workdir / paths.INT8_IMAGE_FILE
    quantize_image(Processed(ROOT / paths.PROCESSED), ROOT / paths.MODELS, out, p.quantize, p.train.seed)
    return out


def bare_forward(rounds: int, int8: Path) -> list[dict]:
    """ms per call of each model's forward pass, TensorFlow vs ONNX Runtime, medians of interleaved rounds."""
    from product_classifier.inference.predictor import load_onnx
    from product_classifier.inference.runtime import onnx_forward
    from product_classifier.pipeline.keras_reference import load_keras_models

    keras_models, onnx_models = load_keras_models(ROOT / paths.MODELS), load_onnx(ROOT / paths.MODELS)
    tf_text, vocab, tf_image, size = keras_models.text, keras_models.vocab, keras_models.image, keras_models.image_size
    ort_text, ort_image = onnx_models.text, onnx_models.image
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, vocab.size, (1, vocab.max_len)).astype("int32")
    images = {n: rng.integers(0, 256, (n, size, size, 3)).astype("float32") for n in (1, 32)}
    cases = {("image", 1): lambda f: f["image"](images[1]), ("image", 32): lambda f: f["image"](images[32]),
             ("text", 1): lambda f: f["text"](tokens)}
    runtimes = {"tensorflow": {"text": tf_text, "image": tf_image}, "onnx": {"text": ort_text, "image": ort_image},
                "int8": {"text": ort_text, "image": onnx_forward(int8)}}
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


def start(variant: str, workdir: Path, int8: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "MODELS_DIR": str(ROOT / "models"), "DVC_LOCK_PATH": str(ROOT / "dvc.lock"),
           "SECRET_KEY": secrets.token_urlsafe(48), "TEST_USER": USER, "TEST_USER_PASSWORD": PASSWORD,
           "RATE_LIMIT_PREDICT": "100000000/minute", "SERVING_LOGGER_PATH": str(workdir / f"{variant}.log"),
           "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT), INT8_ENV: str(int8)}
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


# Load generator: raw HTTP/1.1 over keep-alive sockets (asyncio streams). An httpx AsyncClient in this
# process costs more CPU per request than the server (measured: 439 vs 2,193 req/s on /health/live), and
# on 2 cores it would compete with the server it measures.
BOUNDARY = "benchboundary7d1f"


def multipart(fields: dict[str, str], image: bytes) -> bytes:
    parts = [f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="p.jpg"\r\n'
                 f"Content-Type: image/jpeg\r\n\r\n".encode() + image + b"\r\n")
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()



class Connection:
    """One keep-alive connection that sends POST /predict and reads the status and body."""

    def __init__(self, port: int, token: str):
        self.port, self.token = port, token
        self.reader = self.writer = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def post(self, path: str, body: bytes) -> int:
        head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {self.token}\r\n"
                f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {len(body)}\r\n\r\n")
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return int(status_line.split()[1])

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def load(port: int, token: str, image: bytes, clients: int, requests: int) -> dict:
    """`requests` /predict calls spread over `clients` concurrent keep-alive connections."""
    latencies: list[float] = []
    errors = 0
    todo = iter(range(requests))
    connections = [Connection(port, token) for _ in range(clients)]
    for c in connections:
        await c.open()
        await c.post("/predict", multipart({"designation": "warm up"}, image))  # connections, first shapes

    async def worker(c: Connection):
        nonlocal errors
        for i in todo:
            body = multipart({"designation": f"Piscine tubulaire {i} m"}, image)
            start = time.perf_counter()
            status = await c.post("/predict", body)
            latencies.append((time.perf_counter() - start) * 1000)
            errors += status != 200

    start = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in connections))
    elapsed = time.perf_counter() - start
    for c in connections:
        await c.close()
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


def http(levels: list[int], requests: int, int8: Path) -> list[dict]:
    image = first_image(ROOT / paths.RAW)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for variant in VARIANTS:
            proc, base = start(variant, Path(tmp), int8)
            try:
                token = httpx.post(f"{base}/token", data={"username": USER, "password": PASSWORD}).json()["access_token"]
                for clients in levels:
                    before = model_calls(base)
                    result = asyncio.run(load(int(base.rsplit(':', 1)[1]), token, image, clients, requests))
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

    header("serving: TensorFlow's bare forward vs ONNX Runtime (float, INT8), and /predict over HTTP")
    ensure_models()
    levels = [int(c) for c in args.clients.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        int8 = int8_model(Path(tmp))
        bare = bare_forward(args.rounds, int8)
        print_table(bare, ["runtime", "model", "batch", "ms/call", "ms/item", "items/s"])
        rows = http(levels, args.requests, int8)
    print()
    print_table(rows, ["variant", "clients", "p50", "p95", "p99", "rps", "errors", "items/pass"])
    print(f"serving image: {image_size()}")
    f = {(r["runtime"], r["model"], r["batch"]): r for r in bare}
    by = {(r["variant"], r["clients"]): r for r in rows}
    one, many = min(levels), max(levels)
    tf_both = f["tensorflow", "image", 1]["ms/call"] + f["tensorflow", "text", 1]["ms/call"]
    tf_b32 = f["tensorflow", "image", 32]["items/s"]
    print()
    figures = [
        ("bare forward, both models, batch 1 (ms)", lambda v: f[v, "image", 1]["ms/call"] + f[v, "text", 1]["ms/call"]),
        ("image model bare, batch 32 (items/s)", lambda v: f[v, "image", 32]["items/s"]),
        (f"HTTP p50, {one} client (ms)", lambda v: by[v, one]["p50"]),
        (f"HTTP p99, {one} client (ms)", lambda v: by[v, one]["p99"]),
        (f"HTTP throughput, {many} clients (req/s)", lambda v: by[v, many]["rps"]),
    ]
    print_table([{"figure": name, **{v: fn(v) for v in VARIANTS}} for name, fn in figures], ["figure", *VARIANTS])
    errors = sum(r["errors"] for r in rows)
    for variant in VARIANTS[1:]:
        p50, rps = by[variant, one]["p50"], by[variant, many]["rps"]
        print(f"{variant}: target 1: {one}-client p50 {p50:.1f} ms < TF bare forward of both models {tf_both:.1f} ms: "
              f"{'met' if p50 < tf_both else 'NOT met'}; target 2: {many}-client {rps:.0f} req/s = {rps / tf_b32:.2f}x "
              f"TF bare batch-32 image throughput {tf_b32:.0f}/s (>= 1.2x): {'met' if rps / tf_b32 >= 1.2 else 'NOT met'}")
    print(f"errors over HTTP, all variants: {errors}")


if __name__ == "__main__":
    main()

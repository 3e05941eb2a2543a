"""Serving speed: /predict latency and throughput over HTTP, ours against the naive path, same run.

Three servers, each `serving.app` under uvicorn on 127.0.0.1 with the pipeline's default model:
  naive     Keras `model.predict` per request (what a first version does), one request per forward pass
  compiled  the served path: the models' compiled forward functions (`compile_inference`: tf.function / jax.jit),
            one request per forward pass
  batched   the served path with dynamic micro-batching (the default settings)
A load generator in this process sends /predict (text + a 500x500 JPEG) from 1, 8 and 32 concurrent
clients and prints p50/p95/p99 latency, throughput and errors, side by side.

    python benchmarks/bench_serving.py [--requests 200] [--clients 1,8,32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from common import header, print_table
from product_classifier import paths

ROOT = Path(__file__).resolve().parents[1]
USER, PASSWORD = "bench", secrets.token_urlsafe(16)
VARIANTS = {
    "naive": {"BATCH_MAX_SIZE": "1"},
    "compiled": {"BATCH_MAX_SIZE": "1"},
    "batched": {},
}


# -- the server side: `python bench_serving.py --serve VARIANT` --------------------------------------
def serve(variant: str, port: int) -> None:
    import uvicorn

    from product_classifier.predictor import Predictor
    from serving.app import create_app

    class NaivePredictor(Predictor):
        """Keras's high-level `predict` per call: input pipeline, callbacks and progress machinery each time."""

        def text_proba(self, tokens):
            return self.lstm.predict(tokens, verbose=0).astype("float64")

        def image_proba(self, images):
            return self.image_model.predict(images.astype("float32"), verbose=0).astype("float64")

    loader = NaivePredictor.load if variant == "naive" else Predictor.load
    uvicorn.run(create_app(loader=loader), host="127.0.0.1", port=port, access_log=False, log_level="warning")


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
           "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT), **VARIANTS[variant]}
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--requests", type=int, default=200, help="requests per concurrency level (default 200)")
    parser.add_argument("--clients", default="1,8,32", help="concurrency levels (default 1,8,32)")
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve, args.port)

    header("serving: /predict over HTTP, naive vs compiled vs micro-batched")
    ensure_models()
    image = next(paths.image_dir(ROOT / paths.RAW, "test").glob("*.jpg")).read_bytes()
    levels = [int(c) for c in args.clients.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for variant in VARIANTS:
            proc, base = start(variant, Path(tmp))
            try:
                token = httpx.post(f"{base}/token", data={"username": USER, "password": PASSWORD}).json()["access_token"]
                for clients in levels:
                    before = model_calls(base)
                    result = asyncio.run(load(base, token, image, clients, args.requests))
                    after = model_calls(base)
                    passes, predictions = after[0] - before[0], after[1] - before[1]
                    rows.append({"variant": variant, "clients": clients, **result,
                                 "items/pass": predictions / passes if passes else 0.0})
                    print(f"  {variant:9s} {clients:3d} clients: p50 {result['p50']:.1f} ms, "
                          f"{result['rps']:.0f} req/s, {result['errors']} errors", flush=True)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    print()
    print_table(rows, ["variant", "clients", "p50", "p95", "p99", "rps", "errors", "items/pass"])
    by = {(r["variant"], r["clients"]): r for r in rows}
    one, many = min(levels), max(levels)
    print(f"1 client p50: compiled {by['compiled', one]['p50']:.1f} ms vs naive {by['naive', one]['p50']:.1f} ms "
          f"({by['naive', one]['p50'] / by['compiled', one]['p50']:.1f}x faster; target p50 < 20 ms and >= 5x)")
    print(f"{many} clients throughput: batched {by['batched', many]['rps']:.0f} req/s vs unbatched "
          f"{by['compiled', many]['rps']:.0f} req/s ({by['batched', many]['rps'] / by['compiled', many]['rps']:.1f}x; "
          f"target >= 3x), errors {sum(r['errors'] for r in rows)}")


if __name__ == "__main__":
    main()

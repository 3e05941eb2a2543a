"""Where one /predict request's time goes: py-spy samples the real server under a 1-client load.

The server is the one `bench_serving.py` starts (`serving.app` under uvicorn, the default model on
ONNX Runtime, or `--variant tensorflow` / `int8`); the client is its raw keep-alive HTTP client.
py-spy (the `dev` extra) samples every thread of the server at 200 Hz while it answers; each sample
is counted under the first matching part of the table below, by the frames on its stack.

    python benchmarks/profile_serving.py [--requests 1200] [--variant onnx]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from bench_serving import PASSWORD, ROOT, USER, VARIANTS, ensure_models, int8_model, load, start
from common import first_image, header, print_table
from product_classifier import paths

# (part, frames that mark it): the first match wins, so the model's forward pass is never counted as overhead.
PARTS = (
    ("model forward pass (ONNX Runtime / TensorFlow)", ("(onnxruntime/", "(tensorflow/", "(keras/")),
    ("drift statistics", ("(serving/drift.py",)),
    ("image decode (load_image)", ("load_image (product_classifier/inference/images.py",)),
    ("text cleaning and tokens", ("clean_text (", "Vocabulary.encode (")),
    ("fusion and probabilities (numpy)", ("predict_prepared (", "Prediction.top_k (")),
    ("multipart parsing", ("(multipart/", "_get_form (", "parse (starlette/formparsers")),
    ("authentication (JWT)", ("decode_access_token (",)),
    ("response validation and JSON", ("serialize_response (", "jsonable_encoder (", "render (starlette")),
    ("rate limiting", ("(slowapi/", "(limits/")),
    ("metrics and access log", ("(prometheus_client/", "(prometheus_fastapi_instrumentator/metrics", "(logging/")),
    ("HTTP protocol (uvicorn, httptools)", ("(uvicorn/protocols",)),
)
OTHER = "event loop, thread hand-offs, the rest"


def shares(raw: Path) -> list[dict]:
    counts: collections.Counter = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        part = next((name for name, marks in PARTS if any(m in stack for m in marks)), OTHER)
        counts[part] += int(n)
    total = sum(counts.values()) or 1
    return [{"part": part, "samples": n, "share %": 100 * n / total} for part, n in counts.most_common()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1200, help="requests while sampling (default 1200)")
    parser.add_argument("--variant", choices=VARIANTS, default="onnx", help="server variant (default onnx)")
    args = parser.parse_args()
    spy = shutil.which("py-spy")
    if spy is None:
        raise SystemExit("py-spy not found: install the dev extra (make venv-dev)")
    header(f"profile: one client's /predict on the {args.variant} server, py-spy at 200 Hz")
    ensure_models()
    image = first_image(ROOT / paths.RAW)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        int8 = int8_model(workdir) if args.variant == "int8" else workdir / "unused"
        proc, base = start(args.variant, workdir, int8)
        try:
            token = httpx.post(f"{base}/token", data={"username": USER, "password": PASSWORD}).json()["access_token"]
            port = int(base.rsplit(":", 1)[1])
            asyncio.run(load(port, token, image, 1, 30))  # warm up
            raw = workdir / "profile.txt"
            sampler = subprocess.Popen([spy, "record", "--pid", str(proc.pid), "--format", "raw", "--output", str(raw),
                                        "--rate", "200", "--nonblocking", "--threads"], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
            time.sleep(1)
            result = asyncio.run(load(port, token, image, 1, args.requests))
            sampler.send_signal(signal.SIGINT)  # py-spy writes its samples on Ctrl-C
            sampler.wait(timeout=30)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        print(f"1 client, {args.requests} requests: p50 {result['p50']:.1f} ms, {result['rps']:.0f} req/s, "
              f"{result['errors']} errors")
        print_table(shares(raw), ["part", "samples", "share %"])


if __name__ == "__main__":
    main()

"""Shadow challenger cost: /predict p50 with and without a shadow challenger, same run, same model.

Two servers, `serving.app` under uvicorn on 127.0.0.1 with the pipeline's default model and default
(micro-batched) settings: `champion` alone, and `shadow` with the same models loaded again as a
challenger (CHALLENGER_MODE=shadow), which predicts on every request in a background thread. The load
generator of bench_serving.py sends /predict (text + a 500x500 JPEG) from 1 and 8 clients; the shadow
server's own metrics say how many shadow predictions were made and how many were skipped.

    python benchmarks/bench_shadow.py [--requests 200] [--clients 1,8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from pathlib import Path

import httpx

from bench_serving import PASSWORD, ROOT, USER, ensure_models, load, start
from common import first_image, header, print_table
from product_classifier import paths

SETUPS = {"champion": {}, "shadow": {"CHALLENGER_MODELS_DIR": str(ROOT / "models"), "CHALLENGER_MODE": "shadow",
                                     "CHALLENGER_DVC_LOCK_PATH": str(ROOT / "dvc.lock")}}


def shadow_counts(base: str) -> dict[str, float]:
    counts = {"shadow made": 0.0, "shadow skipped": 0.0}
    for line in httpx.get(f"{base}/metrics").text.splitlines():
        if line.startswith("model_challenger_agreement_total{"):
            counts["shadow made"] += float(line.split()[-1])
        elif line.startswith("model_challenger_shadow_skipped_total "):
            counts["shadow skipped"] += float(line.split()[-1])
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="requests per concurrency level (default 200)")
    parser.add_argument("--clients", default="1,8", help="concurrency levels (default 1,8)")
    args = parser.parse_args()
    header("serving: /predict p50 with and without a shadow challenger")
    ensure_models()
    image = first_image(ROOT / paths.RAW)
    rows = []
    for setup, extra in SETUPS.items():
        saved = {k: os.environ.get(k) for k in extra}
        os.environ.update(extra)  # bench_serving.start passes this process's environment to the server
        try:
            with tempfile.TemporaryDirectory() as tmp:
                proc, base = start("batched", Path(tmp))
                try:
                    token = httpx.post(f"{base}/token", data={"username": USER, "password": PASSWORD}).json()
                    for clients in (int(c) for c in args.clients.split(",")):
                        result = asyncio.run(load(base, token["access_token"], image, clients, args.requests))
                        rows.append({"setup": setup, "clients": clients, **result, **shadow_counts(base)})
                        print(f"  {setup:8s} {clients:2d} clients: p50 {result['p50']:.1f} ms", flush=True)
                finally:
                    proc.terminate()
                    proc.wait(timeout=30)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k)
                else:
                    os.environ[k] = v
    print()
    print_table(rows, ["setup", "clients", "p50", "p95", "p99", "rps", "errors", "shadow made", "shadow skipped"])
    by = {(r["setup"], r["clients"]): r for r in rows}
    for clients in sorted({r["clients"] for r in rows}):
        alone, shadow = by["champion", clients]["p50"], by["shadow", clients]["p50"]
        print(f"{clients} client(s) p50: {shadow:.1f} ms with shadow vs {alone:.1f} ms without ({shadow / alone:.2f}x)")


if __name__ == "__main__":
    main()

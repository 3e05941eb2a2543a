"""The app as users run it: `python -m serving` (uvicorn) on 127.0.0.1, over real HTTP; then schemathesis."""

from __future__ import annotations

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from .conftest import PASSWORD, USER, served

pytestmark = pytest.mark.slow
CONCURRENT = 16


@pytest.fixture(scope="module")
def server(tiny_models, tmp_path_factory):
    with served(tiny_models, tmp_path_factory.mktemp("uvicorn"), RATE_LIMIT_PREDICT="100000/minute",
                BATCH_MAX_WAIT_MS="50") as base:
        yield base


@pytest.fixture(scope="module")
def bearer(server) -> dict:
    response = httpx.post(f"{server}/token", data={"username": USER, "password": PASSWORD})
    assert response.status_code == 200
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def model_calls(server) -> float:
    text = httpx.get(f"{server}/metrics").text
    match = re.search(r'^model_inference_seconds_count\{role="champion",stage="model",[^}]*\} (\S+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_predict_over_http_echoes_request_id(server, bearer):
    response = httpx.post(f"{server}/predict", data={"designation": "Piscine hors-sol"},
                          headers={**bearer, "X-Request-ID": "over-http-1"}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == "over-http-1" == response.json()["request_id"]


def test_concurrent_requests_share_forward_passes(server, bearer, train_images):
    """Micro-batching: many simultaneous /predict calls, in fewer model calls than requests, each answered
    with what its own product gets alone (no answer goes to another request, nothing leaks across a batch)."""
    def one(i: int) -> httpx.Response:
        image = train_images[(7 * i) % len(train_images)]
        return httpx.post(f"{server}/predict", data={"designation": f"Lot de {i} figurines", "productid": i},
                          files={"image": (image.name, image.read_bytes())}, headers=bearer, timeout=60)

    before = model_calls(server)
    with ThreadPoolExecutor(CONCURRENT) as pool:
        together = list(pool.map(one, range(CONCURRENT)))
    calls = model_calls(server) - before
    assert [r.status_code for r in together] == [200] * CONCURRENT
    assert 1 <= calls < CONCURRENT, f"{calls} model calls for {CONCURRENT} concurrent requests"
    for i, response in enumerate(together):
        alone, body = one(i).json(), response.json()
        assert body["productid"] == i
        assert body["prdtypecode"] == alone["prdtypecode"], i
        assert [t["prdtypecode"] for t in body["top_k"]] == [t["prdtypecode"] for t in alone["top_k"]], i
        assert body["confidence"] == pytest.approx(alone["confidence"], abs=1e-5), i
    assert len({r.json()["request_id"] for r in together}) == CONCURRENT


def test_schemathesis_finds_no_server_error(server, bearer, tmp_path):
    """Property-based requests from the app's own OpenAPI schema, positive and negative: never a 5xx, and
    every answer matches the documented status codes, content types and schemas."""
    result = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{server}/openapi.json",
         "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
         "--header", f"Authorization:{bearer['Authorization']}", "--max-examples", "100", "--seed", "1",
         "--phases", "examples,coverage,fuzzing", "--request-timeout", "30", "--workers", "2",
         "--generation-database", "none", "--no-color"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]

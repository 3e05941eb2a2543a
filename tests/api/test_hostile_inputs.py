"""Bounded work per request, measured on the real server (`python -m serving`): its peak memory while hostile
inputs arrive (tiny files that decode huge, in every format; a burst; slow uploads) stays under the stated
bound: MAX_CONCURRENT_DECODES x MAX_DECODE_BYTES for images, plus the bodies of the requests in progress."""

from __future__ import annotations

import re
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from conftest import env, listening_port, process, wait_until_up
from hostile_images import ANSWERED, HOSTILE
from product_classifier.inference.images import MAX_DECODE_BYTES
from serving.config import TOKEN_BODY_BYTES, load_settings

from .conftest import PASSWORD, USER

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak memory is read from Linux /proc")]
REQUESTS, DECODES = 4, 2  # MAX_CONCURRENT_REQUESTS, MAX_CONCURRENT_DECODES of the server under test
# What one request in progress may hold besides its decode: its body, a few times over (multipart parsing,
# the image's bytes, the decoder's stream).
BODY = 3 * load_settings(environment="development").upload_limit("/predict")
BOUND = DECODES * MAX_DECODE_BYTES + REQUESTS * BODY


class Server:
    def __init__(self, base: str, pid: int, bearer: dict):
        self.base, self.pid, self.bearer = base, pid, bearer

    def status(self, key: str) -> int:
        text = Path(f"/proc/{self.pid}/status").read_text()
        return int(re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE).group(1)) * 1024

    def reset_peak(self) -> int:
        """The resident memory now (the baseline), and the peak (VmHWM) reset to it."""
        baseline = self.status("VmRSS")
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        return baseline

    def predict(self, image: bytes | None = None, name: str = "image") -> httpx.Response:
        files = {"image": (name, image)} if image is not None else None
        return httpx.post(f"{self.base}/predict", data={"designation": "Lot de figurines"}, files=files,
                          headers=self.bearer, timeout=120)


@pytest.fixture(scope="module")
def server(tiny_models, train_images, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    variables = {**env(), "MODELS_DIR": str(tiny_models), "SECRET_KEY": "k" + "0123456789abcdefghij" * 3,
                 "TEST_USER": USER, "TEST_USER_PASSWORD": PASSWORD, "RATE_LIMIT_PREDICT": "100000/minute",
                 "RATE_LIMIT_TOKEN": "100000/minute", "SERVING_LOGGER_PATH": str(tmp / "serving.log"),
                 "MAX_CONCURRENT_REQUESTS": str(REQUESTS), "MAX_CONCURRENT_DECODES": str(DECODES)}
    log = tmp / "stdout.log"
    with process([sys.executable, "-m", "serving", "--host", "127.0.0.1", "--port", 0], log, variables, tmp) as proc:
        base = f"http://127.0.0.1:{listening_port(proc, log, 180)}"
        wait_until_up(f"{base}/health/ready", proc, log, 180)
        token = httpx.post(f"{base}/token", data={"username": USER, "password": PASSWORD}).json()["access_token"]
        served = Server(base, proc.pid, {"Authorization": f"Bearer {token}"})
        with ThreadPoolExecutor(REQUESTS) as pool:  # warm-up: normal requests, a few at a time
            for response in pool.map(lambda p: served.predict(p.read_bytes()), train_images[:3 * REQUESTS]):
                assert response.status_code == 200, response.text
        yield served


def assert_within_bound(server: Server, baseline: int, what: str) -> None:
    growth = server.status("VmHWM") - baseline
    assert growth <= BOUND, f"{what}: the server grew {growth / 2**20:.0f} MiB, over {BOUND / 2**20:.0f} MiB"


def test_tiny_files_that_decode_huge_are_refused_or_reduced_within_the_bound(server):
    """Every format Pillow opens, sent together: each answers (422, or 200 when reduced), the server's peak
    stays under the bound (before: +1.6 GB for the 29 kB 20000x500 PNG alone)."""
    files = {name: make() for name, make in HOSTILE.items()}
    baseline = server.reset_peak()
    with ThreadPoolExecutor(REQUESTS) as pool:
        answers = dict(zip(files, pool.map(lambda name: server.predict(files[name], name), files), strict=True))
    for name, response in answers.items():
        expected = 200 if name in ANSWERED else 422
        assert response.status_code in (expected, 503), (name, response.text)
        if response.status_code == 503:  # the concurrency bound answered first: it is asked again alone
            response = server.predict(files[name], name)
        assert response.status_code == expected, (name, response.text)
        assert set(response.json()) >= {"request_id"}
    assert_within_bound(server, baseline, "hostile images")


class SlowUpload:
    """A client that sends its headers and part of its body, then holds the connection: a slow upload."""

    def __init__(self, server: Server, sent: int = 64_000, declared: int = 4_000_000, path: str = "/predict"):
        host, port = server.base.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=60)
        head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {server.bearer['Authorization']}\r\n"
                f"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: {declared}\r\n\r\n")
        part = b'--x\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
        self.sock.sendall(head.encode() + part + b"\0" * (sent - len(part)))

    def close(self) -> None:
        self.sock.close()


def eventually_503(server: Server, attempts: int = 200) -> httpx.Response:
    """/predict until the slow uploads hold every slot (the server reads their headers when it gets to them)."""
    for _ in range(attempts):
        response = server.predict()
        if response.status_code == 503:
            return response
        assert response.status_code == 200, response.text
    pytest.fail(f"no 503 in {attempts} requests while {REQUESTS} slow uploads hold the slots")


def test_slow_uploads_take_the_slots_others_get_503_health_answers(server):
    baseline = server.reset_peak()
    slow = [SlowUpload(server) for _ in range(REQUESTS)]
    try:
        refused = eventually_503(server)
        assert refused.headers["retry-after"] == "1"
        assert set(refused.json()) == {"detail", "request_id"} and "MAX_CONCURRENT_REQUESTS" in refused.json()["detail"]
        assert refused.json()["request_id"] == refused.headers["x-request-id"]
        for path in ("/health/live", "/health/ready"):  # probes are never counted
            assert httpx.get(f"{server.base}{path}", timeout=30).status_code == 200, path
        with ThreadPoolExecutor(8) as pool:  # a burst while every slot is held: all 503, none waits for memory
            burst = list(pool.map(lambda _: server.predict(HOSTILE["png-9000x300"]()), range(16)))
        assert [r.status_code for r in burst] == [503] * 16
    finally:
        for client in slow:
            client.close()
    assert_within_bound(server, baseline, "slow uploads")
    for _ in range(200):  # the slots free up when the slow clients go
        if (response := server.predict()).status_code == 200:
            break
    assert response.status_code == 200, response.text


def test_slow_logins_hold_no_slot_and_token_bodies_are_small(server):
    """/token is reached without a token: slow logins must not take the slots predictions need, and its body
    (a form of a few fields) is capped at TOKEN_BODY_BYTES, not at an image's size."""
    slow = [SlowUpload(server, sent=200, declared=TOKEN_BODY_BYTES, path="/token") for _ in range(2 * REQUESTS)]
    try:
        assert server.predict().status_code == 200
    finally:
        for client in slow:
            client.close()
    big = httpx.post(f"{server.base}/token", data={"username": USER, "password": "x" * (2 * TOKEN_BODY_BYTES)},
                     timeout=30)
    assert big.status_code == 413 and set(big.json()) == {"detail", "request_id"}, big.text


def test_burst_beyond_the_limit_degrades_into_503s_within_the_bound(server):
    image = HOSTILE["png-9000x300"]()  # reduced: decoded and answered
    baseline = server.reset_peak()
    with ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(lambda _: server.predict(image), range(48)))
    statuses = {r.status_code for r in answers}
    assert statuses == {200, 503}, [r.text for r in answers if r.status_code not in (200, 503)] or statuses
    for response in answers:
        assert "request_id" in response.json()
        if response.status_code == 503:
            assert response.headers["retry-after"]
    assert_within_bound(server, baseline, "burst")

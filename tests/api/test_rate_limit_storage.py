"""Rate limits whose storage (Redis) is down, hangs, or dies and comes back, against real servers: `/token`
answers (200, 401, 429), never 500 and never a hang; the limits count in each replica's memory meanwhile
(a warning, `rate_limit_storage_fallback` 1) and in Redis again once it answers."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import free_port, process

from .conftest import PASSWORD, USER, metric, served

pytestmark = pytest.mark.slow
FALLBACK = "rate_limit_storage_fallback"
needs_redis = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server missing: run `make sysdeps`")


def login(base: str, password: str = PASSWORD, user: str = USER) -> httpx.Response:
    return httpx.post(f"{base}/token", data={"username": user, "password": password}, timeout=60)


def on_memory(base: str) -> float:
    with httpx.Client(base_url=base, timeout=30) as client:
        return metric(client, FALLBACK)


def log_of(tmp: Path) -> str:
    return (tmp / "serving.log").read_text()


@pytest.fixture
def silent_redis():
    """A "Redis" that accepts connections and never answers (nor reads): its address."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held, stop = [], threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                held.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


@pytest.mark.parametrize("storage", ["down", "silent"])
def test_token_answers_when_redis_is_down_or_silent(storage, silent_redis, tiny_models, tmp_path):
    """Down: a closed port (connection refused). Silent: accepts and never answers (only the socket timeout
    ends the wait). Either way, logins and refusals as usual, the per-address limit in memory."""
    uri = f"redis://127.0.0.1:{free_port()}/0" if storage == "down" else silent_redis
    with served(tiny_models, tmp_path, RATE_LIMIT_STORAGE_URI=uri, RATE_LIMIT_TOKEN="3/minute",
                RATE_LIMIT_STORAGE_TIMEOUT_SECONDS="0.5") as base:
        statuses = [login(base).status_code, login(base, "wrong-password").status_code, login(base).status_code,
                    login(base).status_code]
        assert statuses == [200, 401, 200, 429], statuses  # degraded, not disabled: the limit holds per replica
        assert on_memory(base) == 1
    warnings = [line for line in log_of(tmp_path).splitlines() if "unreachable" in line]
    assert warnings and '"level": "WARNING"' in warnings[0] and "127.0.0.1" in warnings[0]


@contextlib.contextmanager
def redis_server(port: int, tmp: Path):
    """A real redis-server on `port`, no persistence, stopped at the end; waits until it answers PING."""
    log = tmp / f"redis-{port}-{time.monotonic_ns()}.log"
    with process(["redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                 log, cwd=tmp) as proc:
        deadline = time.monotonic() + 30
        while redis_cli(port, "PING") != "PONG":
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield proc


def redis_cli(port: int, *args: str) -> str:
    result = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True)
    return result.stdout.strip()


@needs_redis
def test_limits_shared_through_redis_then_memory_while_it_is_down_then_shared_again(tiny_models, tmp_path):
    port = free_port()
    uri = f"redis://127.0.0.1:{port}/0"
    variables = {"RATE_LIMIT_STORAGE_URI": uri, "RATE_LIMIT_TOKEN": "4/minute", "RATE_LIMIT_TOKEN_ACCOUNT": "2/minute"}
    with redis_server(port, tmp_path) as redis, served(tiny_models, tmp_path / "a", **variables) as a, \
            served(tiny_models, tmp_path / "b", **variables) as b:
        # Shared: failed logins for one name count across both apps, then the per-address limit across both.
        guesses = [login(base, "guess", "mallory").status_code for base in (a, b, a)]
        assert guesses == [401, 401, 429], guesses
        assert [login(b).status_code, login(a).status_code] == [200, 429]  # 4 per address: 2 on each app, then no
        assert redis_cli(port, "--scan", "--pattern", "LIMITS*"), "no counter in Redis"
        assert on_memory(a) == on_memory(b) == 0

        redis.kill()
        redis.wait()
        # Down: each app counts on its own, from zero; never a 500.
        assert [login(a).status_code for _ in range(5)] == [200, 200, 200, 200, 429]
        assert login(b).status_code == 200
        assert on_memory(a) == on_memory(b) == 1

        with redis_server(port, tmp_path):
            # slowapi asks the storage again 1, 2, 4, ... s after the last try, on a request: keep asking.
            deadline = time.monotonic() + 120
            while on_memory(a) == 1:
                assert time.monotonic() < deadline, f"never back on Redis:\n{log_of(tmp_path / 'a')[-3000:]}"
                assert login(a, "guess", "someone").status_code in (401, 429)
                time.sleep(0.5)
            before = len(redis_cli(port, "--scan", "--pattern", "LIMITS*").split())
            assert login(a, "guess", "after-restart").status_code in (401, 429)
            assert len(redis_cli(port, "--scan", "--pattern", "LIMITS*").split()) > before  # counted in Redis again
    assert any("answers again" in line for line in log_of(tmp_path / "a").splitlines())

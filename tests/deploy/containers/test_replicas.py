"""Two serving replicas behind nginx with Redis (docker-compose.replicas.yml), started on the suite's engine and
checked from the host: one rate limit across replicas, clean 413s, a replica killed mid-load costs nothing, a
client's own X-Forwarded-For changes nothing, /metrics and the API docs stay inside, and Redis stopped costs no
login."""

from __future__ import annotations

import functools
import ipaddress
import json
import re
import secrets
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import httpx
import pytest

from serving.security import User, hash_password

from .conftest import Compose, port_or_free, project_dir, secret_values, wait_for

pytestmark = [pytest.mark.container, pytest.mark.slow]
COMPOSE_FILE = "docker-compose.replicas.yml"
LIMIT = 24  # predictions per user per hour, for the whole deployment
TOKEN_LIMIT = 6  # /token attempts per client address per hour
SECOND_USER, SECOND_PASSWORD = "second-user", secrets.token_urlsafe(16)
MB = 1_000_000
REPLICAS = ("serving-1", "serving-2")


def users_override(directory: Path) -> str:
    """A users file for both replicas (a second user with a quota of their own), mounted by an override file."""
    users = directory / "users.json"
    user = User(SECOND_USER, "Second User", hash_password(SECOND_PASSWORD))
    users.write_text(json.dumps({user.username: {"full_name": user.full_name, "hashed_password": user.hashed_password}}))
    users.chmod(0o644)  # read by uid 10001 in the containers
    override = "docker-compose.test-users.yml"
    mount = {"volumes": ["./users.json:/app/users.json:ro"]}
    (directory / override).write_text(json.dumps({"services": {"serving-1": mount, "serving-2": mount}}))
    return override


@pytest.fixture(scope="module")
def stack(engine, serving_image, compose_env, tiny_repo, tmp_path_factory):
    values = secret_values(RATE_LIMIT_PREDICT=f"{LIMIT}/hour", RATE_LIMIT_TOKEN=f"{TOKEN_LIMIT}/hour",
                           USERS_FILE="/app/users.json")
    port = port_or_free(8000)
    if port != 8000:
        values["SERVING_PORT"] = str(port)
    directory = project_dir(tmp_path_factory.mktemp("replicas") / "checkout", tiny_repo, values, (COMPOSE_FILE,))
    compose = Compose("pctest-replicas", directory, [COMPOSE_FILE, users_override(directory)], compose_env, engine)
    with compose.up():
        base = f"http://127.0.0.1:{port}"
        replicas_healthy(compose)
        wait_for(f"{base}/health/ready", 60, "proxy", compose.logs)
        yield compose, base, values


def replicas_healthy(compose: Compose, timeout: float = 300) -> None:
    """Both replicas healthy (the compose healthcheck, run on demand)."""
    for service in REPLICAS:
        deadline = time.monotonic() + timeout
        while compose.engine.healthcheck(compose.container(service)).returncode != 0:
            assert time.monotonic() < deadline, f"{service} not healthy\n{compose.logs()}"
            time.sleep(2)


def restore_replica(compose: Compose, base: str, container: str) -> None:
    """Start a killed replica again (the engine's restart policy may not, podman without systemd here), wait
    until both are healthy, and restart nginx, which resolves the replicas' addresses when it starts."""
    compose.engine("start", container, check=False)
    replicas_healthy(compose)
    compose("restart", "proxy")
    wait_for(f"{base}/health/ready", 60, "proxy", compose.logs)


@functools.cache  # one /token call per user: the tests share the per-address /token limit (TOKEN_LIMIT)
def bearer(base: str, user: str, password: str) -> dict:
    response = httpx.post(f"{base}/token", data={"username": user, "password": password}, timeout=30)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def predict(base: str, auth: dict, i: int) -> httpx.Response:
    return httpx.post(f"{base}/predict", data={"designation": f"Lot de {i} figurines"}, headers=auth, timeout=120)


def test_rate_limit_holds_across_replicas(stack):
    compose, base, values = stack
    auth = bearer(base, values["TEST_USER"], values["TEST_USER_PASSWORD"])
    responses = [predict(base, auth, i) for i in range(LIMIT + 6)]
    statuses = [r.status_code for r in responses]
    assert statuses == [200] * LIMIT + [429] * 6, statuses
    upstreams = {r.headers["x-upstream"] for r in responses[:LIMIT]}
    assert len(upstreams) == 2, f"every request went to {upstreams}: the proxy does not balance"
    assert "detail" in responses[-1].json()
    keys = compose.engine("exec", compose.container("redis"), "redis-cli", "--scan", "--pattern", "LIMITS*").stdout.split()
    assert keys, "no rate-limit counter in Redis"


def test_oversized_upload_gets_a_clean_413(stack):
    """30 MB still being sent when the proxy decides: the client gets the 413 JSON, not a reset."""
    _, base, values = stack
    auth = bearer(base, SECOND_USER, SECOND_PASSWORD)
    big = secrets.token_bytes(30 * MB)
    sized = httpx.post(f"{base}/predict", data={"designation": "x"}, files={"image": ("big.jpg", big, "image/jpeg")},
                       headers=auth, timeout=120)

    def chunks():
        for start in range(0, len(big), MB):
            yield big[start:start + MB]

    chunked = httpx.post(f"{base}/predict", content=chunks(), timeout=120,
                         headers={**auth, "Content-Type": "application/octet-stream"})
    for response in (sized, chunked):
        assert response.status_code == 413, response.text
        assert response.json()["detail"] == "request body too large"
    # A batch may be larger than one product: its own limit (MAX_BATCH_BYTES, 16 MB), so the app sees 10 MB
    # (and refuses the bytes that are not JSON itself); 30 MB is over it, and nginx refuses it.
    # Not random bytes: a few of those (a zero byte first) read as UTF-16 and fail as JSON (422), the rest as text (400).
    batch = httpx.post(f"{base}/predict/batch", content=b"not json " * (10 * MB // 9),
                       headers={**auth, "Content-Type": "application/json"}, timeout=120)
    assert batch.status_code == 422 and "JSON decode error" in batch.json()["detail"], batch.text
    assert batch.json()["request_id"]
    batch = httpx.post(f"{base}/predict/batch", content=big, headers={**auth, "Content-Type": "application/json"},
                       timeout=120)
    assert batch.status_code == 413 and batch.json()["detail"] == "request body too large", batch.text


def test_killing_a_replica_mid_load_loses_no_request(stack):
    compose, base, _ = stack
    auth = bearer(base, SECOND_USER, SECOND_PASSWORD)
    # Below the limit with room to spare: a request the dead replica had already counted in Redis counts
    # again on the replica that answers it (at most one per worker in flight at the kill).
    total, before_kill, after_kill = LIMIT - 8, 6, 4
    victim = compose.container("serving-1")  # looked up before the load: `compose ps` takes longer than the requests
    try:
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(predict, base, auth, i) for i in range(total - after_kill)]
            for done, _ in enumerate(as_completed(futures), start=1):
                if done == before_kill:
                    compose.engine("kill", "--signal", "KILL", victim)
                    break
            responses = [f.result() for f in futures]
        # On a fast machine the load may end before the kill lands: a few requests once the replica is surely
        # dead, so that round robin sends one to it whatever the timing (the first that meets it is retried).
        responses += [predict(base, auth, i) for i in range(total - after_kill, total)]
    finally:  # the other tests, in any order, find both replicas behind nginx again
        restore_replica(compose, base, victim)
    statuses = [r.status_code for r in responses]
    assert statuses == [200] * total, [(r.status_code, r.text[:200]) for r in responses if r.status_code != 200]
    # Round robin sends one of the next requests to the dead replica: nginx retried it on the other one.
    retried = [r.headers["x-upstream"] for r in responses if ", " in r.headers["x-upstream"]]
    assert retried, [r.headers["x-upstream"] for r in responses]


def clear_token_limits(compose: Compose) -> None:
    """Forget the /token counters in Redis (the limit test spends the address's attempts, other tests need one)."""
    redis = compose.container("redis")
    # slowapi keys by URL: LIMITS:LIMITER/<client>//token/<amount>/<multiples>/<granularity>
    keys = compose.engine("exec", redis, "redis-cli", "--scan", "--pattern", "LIMITS*/token/*").stdout.split()
    if keys:
        compose.engine("exec", redis, "redis-cli", "del", *keys)


def access_log(compose: Compose, request_ids: set[str]) -> list[dict]:
    """The replicas' JSON access-log records of these requests (from the containers' stdout)."""
    out = compose("logs", "--no-color", "serving-1", "serving-2").stdout
    records = []
    for line in out.splitlines():
        if "{" in line and any(rid in line for rid in request_ids):
            record = json.loads(line[line.index("{"):])
            records.append({**record, **record.get("fields", {})})
    return records


def test_a_client_rotating_x_forwarded_for_cannot_dodge_the_token_limit(stack):
    """Password guessing with a new X-Forwarded-For (and user name) each time: the proxy's address for the
    client wins, the per-address limit holds after TOKEN_LIMIT attempts, and the logs name the real client."""
    compose, base, _ = stack
    clear_token_limits(compose)
    try:
        spoofed = [f"203.0.113.{i}" for i in range(TOKEN_LIMIT + 4)]
        ids = {f"xff-probe-{i}" for i in range(len(spoofed))}
        statuses = [httpx.post(f"{base}/token", data={"username": f"guess-{i}", "password": "wrong-password"},
                               headers={"X-Forwarded-For": address, "X-Request-ID": f"xff-probe-{i}"},
                               timeout=30).status_code for i, address in enumerate(spoofed)]
        assert [s == 429 for s in statuses] == [False] * TOKEN_LIMIT + [True] * 4, statuses
        records = access_log(compose, ids)
        assert {r["request_id"] for r in records} == ids, records
        clients = {r["client"] for r in records}
        assert len(clients) == 1 and not clients & set(spoofed), clients
        [client] = clients
        ipaddress.ip_address(client)
        # The address nginx itself saw ($remote_addr, first field of its access log), not nginx's own.
        seen = {line.split("|", 1)[-1].split()[0] for line in compose("logs", "--no-color", "proxy").stdout.splitlines()
                if '"POST /token' in line}
        assert seen == {client}, (seen, client)
    finally:
        clear_token_limits(compose)


@pytest.mark.parametrize("path", ["/metrics", "/metrics/", "//metrics", "/docs", "/docs/oauth2-redirect", "/redoc",
                                  "/openapi.json", "/docs/../metrics"])
def test_metrics_and_api_docs_are_not_served_through_the_proxy(stack, path):
    compose, base, _ = stack
    response = httpx.get(f"{base}{path}", timeout=30)
    assert response.status_code == 404 and response.json()["detail"] == "not found", response.text
    assert response.json()["request_id"]


def test_metrics_are_served_on_the_compose_network(stack):
    """Where Prometheus would scrape a replica: its address on the compose network (its host name, as the
    healthcheck asks), not through nginx."""
    compose, *_ = stack
    fetch = ("import socket, urllib.request; "
             "print(urllib.request.urlopen(f'http://{socket.gethostname()}:8000/metrics').status)")
    result = compose.engine("exec", compose.container("serving-1"), "python", "-c", fetch)
    assert result.stdout.strip() == "200", result.stdout + result.stderr


SCRAPE = "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8000/metrics', timeout=10).read().decode())"


def on_memory(compose: Compose, service: str) -> bool:
    """`rate_limit_storage_fallback` of one replica, scraped from inside its container (as Prometheus would)."""
    metrics = compose.engine("exec", compose.container(service), "python", "-c", SCRAPE).stdout
    return re.search(r"^rate_limit_storage_fallback 1\.0$", metrics, re.MULTILINE) is not None


def test_token_answers_while_redis_is_stopped(stack):
    """Redis stopped: /token through nginx still answers, never 500; each replica counts in its own memory
    meanwhile and says so in its metrics. Redis started again: both replicas count in it again (slowapi asks it
    again on a request, 1, 2, 4, ... s after its last try), so the other tests find their limits shared."""
    compose, base, _ = stack
    replicas_healthy(compose)

    def login(password: str) -> httpx.Response:
        return httpx.post(f"{base}/token", data={"username": SECOND_USER, "password": password}, timeout=60)

    compose("stop", "redis")
    try:
        answers = [login(password) for password in (SECOND_PASSWORD, "wrong-password") * 2]
        assert [r.status_code for r in answers] == [200, 401, 200, 401], [(r.status_code, r.text) for r in answers]
        assert len({r.headers["x-upstream"] for r in answers}) == 2, "both replicas answered without Redis"
        assert all(on_memory(compose, service) for service in REPLICAS)
    finally:
        compose("start", "redis")
    deadline = time.monotonic() + 120
    while any(on_memory(compose, service) for service in REPLICAS):
        assert time.monotonic() < deadline, f"not back on Redis\n{compose.logs()}"
        time.sleep(3)
        assert login(SECOND_PASSWORD).status_code in (200, 429)

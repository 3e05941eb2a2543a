"""The monitoring stack as docs/monitoring.md starts it: `.env.example` copied to `.env` and filled in, then
`docker compose -f docker-compose.monitoring.yml up` (on podman: docker-compose v1), every service but Grafana
(no stand-in for its image here) and the retrain relay (behind its `retrain` profile). Checked from the host: serving on its port, every Prometheus target up."""

from __future__ import annotations

import secrets
import subprocess
import time

import httpx
import pytest

from conftest import PROJECT

from .conftest import Compose, port_or_free, project_dir, secret_values, wait_for

pytestmark = [pytest.mark.container, pytest.mark.slow]
COMPOSE_FILE = "docker-compose.monitoring.yml"
SERVICES = ("serving", "prometheus", "node-exporter", "alertmanager")


@pytest.fixture(scope="module")
def stack(engine, serving_image, compose_env, tiny_repo, tmp_path_factory):
    values = secret_values(GRAFANA_ADMIN_PASSWORD=secrets.token_urlsafe(16))  # compose refuses to start without it
    # The documented ports, unless something else on this machine holds them.
    ports = {"SERVING_PORT": port_or_free(8000), "PROMETHEUS_PORT": port_or_free(9090),
             "ALERTMANAGER_PORT": port_or_free(9093)}
    values.update({name: str(port) for name, port in ports.items() if port not in (8000, 9090, 9093)})
    directory = project_dir(tmp_path_factory.mktemp("compose") / "checkout", tiny_repo, values, (COMPOSE_FILE,))
    # The secret Alertmanager's webhook sends the relay, as `make relay-secret` writes it.
    subprocess.run(["make", "-s", "-f", PROJECT / "Makefile", "relay-secret"], cwd=directory, check=True)
    compose = Compose("pctest-monitoring", directory, [COMPOSE_FILE], compose_env, engine)
    with compose.up(*SERVICES):
        serving = f"http://127.0.0.1:{ports['SERVING_PORT']}"
        prometheus = f"http://127.0.0.1:{ports['PROMETHEUS_PORT']}"
        wait_for(f"{serving}/health/ready", 300, "serving (compose)", compose.logs,
                 containers=(compose.container("serving"),), engine=engine)
        wait_for(f"{prometheus}/-/ready", 120, "prometheus (compose)", compose.logs)
        yield compose, serving, prometheus, values
    leftovers = engine("ps", "-a", "--filter", f"label=com.docker.compose.project={compose.project}",
                       "--format", "{{.Names}}").stdout.split()
    volumes = engine("volume", "ls", "--filter", f"label=com.docker.compose.project={compose.project}",
                     "--format", "{{.Name}}").stdout.split()
    assert not leftovers and not volumes, f"`down -v` left {leftovers} {volumes}"


def test_serving_answers_on_the_host_port(stack):
    _, serving, _, values = stack
    token = httpx.post(f"{serving}/token", data={"username": values["TEST_USER"],
                                                 "password": values["TEST_USER_PASSWORD"]})
    assert token.status_code == 200, token.text
    response = httpx.post(f"{serving}/predict", data={"designation": "Lot de 3 figurines Star Wars"},
                          headers={"Authorization": f"Bearer {token.json()['access_token']}"}, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["modalities"] == ["text"]


def test_every_prometheus_target_is_up(stack):
    compose, _, prometheus, _ = stack
    deadline = time.monotonic() + 120  # scrape_interval is 15 s
    while True:
        targets = httpx.get(f"{prometheus}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        health = {t["labels"]["job"]: (t["health"], t.get("lastError")) for t in targets}
        if set(health) == set(SERVICES) and all(h == "up" for h, _ in health.values()):
            return
        assert time.monotonic() < deadline, f"targets not all up: {health}\n{compose.logs()}"
        time.sleep(2)


def test_compose_healthcheck_passes(stack):
    """compose's healthcheck asks the container's network address; run on demand (podman has no systemd here)."""
    compose, *_ = stack
    result = compose.engine.healthcheck(compose.container("serving"))
    assert result.returncode == 0, result.stdout + result.stderr

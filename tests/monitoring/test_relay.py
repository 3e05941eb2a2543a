"""The retrain relay (`python -m serving.relay`) as Alertmanager reaches it, against a local GitHub stand-in."""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys

import httpx
import pytest
from monitoring_helpers import GitHubStandIn

from conftest import env, listening_port, process, wait_until_up

REPOSITORY = "owner/product-classifier"


def webhook(*alerts: dict) -> dict:
    """An Alertmanager webhook message (version 4), as Alertmanager 0.25 sends it."""
    return {"version": "4", "status": "firing", "receiver": "retrain", "groupKey": "{}:{alertname=\"PredictionDrift\"}",
            "externalURL": "http://alertmanager:9093", "alerts": list(alerts), "commonLabels": {}}


def alert(status: str = "firing", version: str = "a1b2c3") -> dict:
    return {"status": status, "labels": {"alertname": "PredictionDrift", "action": "retrain", "severity": "warning",
                                         "version": version},
            "annotations": {"summary": "drift", "description": "G-test p-value 1e-30"},
            "startsAt": "2026-11-23T17:00:00Z", "fingerprint": "abc"}


@pytest.fixture
def relay(tmp_path):
    def start(github: GitHubStandIn, **extra_env):
        log = tmp_path / "relay.log"
        proc = stack.enter_context(process([sys.executable, "-m", "serving.relay", "--port", 0, "--repository",
                                            REPOSITORY, "--api-url", github.url], log, {**env(), **extra_env}))
        port = listening_port(proc, log)
        wait_until_up(f"http://127.0.0.1:{port}/health", proc, log, 30)
        return f"http://127.0.0.1:{port}", log

    with contextlib.ExitStack() as stack:
        yield start


def test_a_firing_alert_becomes_one_dispatch_with_the_token_from_a_file(relay, tmp_path):
    github = GitHubStandIn()
    token = secrets.token_urlsafe(24)
    (tmp_path / "token").write_text(token + "\n")
    url, log = relay(github, GITHUB_TOKEN_FILE=str(tmp_path / "token"))
    response = httpx.post(f"{url}/alert", json=webhook(alert(), alert("resolved", "old")))
    assert response.status_code == 200 and response.json() == {"dispatched": 1}
    [request] = github.received
    assert request["path"] == f"/repos/{REPOSITORY}/dispatches"
    assert request["headers"]["Authorization"] == f"Bearer {token}"
    assert request["body"]["event_type"] == "retrain"
    assert request["body"]["client_payload"]["model_version"] == "a1b2c3"
    assert token not in log.read_text()
    github.close()


def test_github_refusing_is_a_502_so_alertmanager_retries(relay):
    github = GitHubStandIn(status=401)
    url, _ = relay(github, GITHUB_TOKEN="wrong")
    response = httpx.post(f"{url}/alert", json=webhook(alert()))
    assert response.status_code == 502 and "401" in response.json()["detail"]
    github.close()


def test_bad_bodies_get_a_4xx_and_nothing_is_dispatched(relay):
    github = GitHubStandIn()
    url, _ = relay(github, GITHUB_TOKEN="t")
    assert httpx.post(f"{url}/alert", content=b"not json", headers={"Content-Type": "application/json"}).status_code == 400
    assert httpx.post(f"{url}/alert", json=[1, 2]).status_code == 400
    assert httpx.post(f"{url}/elsewhere", json=webhook(alert())).status_code == 404
    assert github.received == []
    github.close()


def test_no_token_is_a_one_line_refusal_to_start(tmp_path):
    e = {k: v for k, v in env().items() if not k.startswith("GITHUB_TOKEN")}
    result = subprocess.run([sys.executable, "-m", "serving.relay", "--repository", REPOSITORY], env=e,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "GITHUB_TOKEN" in result.stderr and "Traceback" not in result.stderr

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
SECRET = secrets.token_urlsafe(32)
AUTH = {"Authorization": f"Bearer {SECRET}"}


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
    secret_file = tmp_path / "relay_secret"
    secret_file.write_text(SECRET + "\n")

    def start(github: GitHubStandIn, **extra_env):
        log = tmp_path / "relay.log"
        extra_env = {"RELAY_SECRET_FILE": str(secret_file), **extra_env}
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
    response = httpx.post(f"{url}/alert", json=webhook(alert(), alert("resolved", "old")), headers=AUTH)
    assert response.status_code == 200 and response.json() == {"dispatched": 1, "already_dispatched": 0}
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
    response = httpx.post(f"{url}/alert", json=webhook(alert()), headers=AUTH)
    assert response.status_code == 502 and "401" in response.json()["detail"]
    github.close()


def test_bad_bodies_get_a_4xx_and_nothing_is_dispatched(relay):
    github = GitHubStandIn()
    url, _ = relay(github, GITHUB_TOKEN="t")
    assert httpx.post(f"{url}/alert", content=b"not json",
                      headers={**AUTH, "Content-Type": "application/json"}).status_code == 400
    assert httpx.post(f"{url}/alert", json=[1, 2], headers=AUTH).status_code == 400
    assert httpx.post(f"{url}/elsewhere", json=webhook(alert())).status_code == 404
    assert github.received == []
    github.close()


def test_no_token_is_a_one_line_refusal_to_start(tmp_path):
    e = {k: v for k, v in env().items() if not k.startswith("GITHUB_TOKEN")}
    result = subprocess.run([sys.executable, "-m", "serving.relay", "--repository", REPOSITORY],
                            env={**e, "RELAY_SECRET": SECRET}, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "GITHUB_TOKEN" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("secret_env", [{}, {"RELAY_SECRET": ""}, {"RELAY_SECRET_FILE": "empty"}],
                         ids=["unset", "empty", "empty-file"])
def test_no_relay_secret_is_a_one_line_refusal_to_start(tmp_path, secret_env):
    (tmp_path / "empty").write_text("\n")
    e = {k: v for k, v in env().items() if not k.startswith("RELAY_SECRET")}
    secret_env = {k: str(tmp_path / v) if k.endswith("_FILE") else v for k, v in secret_env.items()}
    result = subprocess.run([sys.executable, "-m", "serving.relay", "--repository", REPOSITORY],
                            env={**e, "GITHUB_TOKEN": "t", **secret_env}, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and "RELAY_SECRET_FILE" in result.stderr


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": SECRET},
                                     {"Authorization": f"Basic {SECRET}"}, {"Authorization": f"Bearer {SECRET}x"}],
                         ids=["none", "wrong", "no-scheme", "basic", "longer"])
def test_a_webhook_without_the_secret_is_a_401_and_dispatches_nothing(relay, headers):
    github = GitHubStandIn()
    url, _ = relay(github, GITHUB_TOKEN="t")
    response = httpx.post(f"{url}/alert", json=webhook(alert()), headers=headers)
    assert response.status_code == 401 and response.json()["detail"] == "missing or wrong relay secret"
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert github.received == []
    assert httpx.post(f"{url}/alert", json=webhook(alert()), headers=AUTH).status_code == 200
    assert len(github.received) == 1
    github.close()


def test_a_repeated_or_replayed_alert_starts_one_retrain(relay):
    """Alertmanager repeats a firing alert (repeat_interval) and a replay resends it: one dispatch per alert
    (fingerprint, startsAt); the same alert firing again later (a new startsAt) is a new one."""
    github = GitHubStandIn()
    url, log = relay(github, GITHUB_TOKEN="t")
    first = httpx.post(f"{url}/alert", json=webhook(alert()), headers=AUTH)
    assert first.json() == {"dispatched": 1, "already_dispatched": 0}
    for _ in range(3):
        again = httpx.post(f"{url}/alert", json=webhook(alert()), headers=AUTH)
        assert again.status_code == 200 and again.json() == {"dispatched": 0, "already_dispatched": 1}
    later = {**alert(), "startsAt": "2026-11-24T09:00:00Z"}
    assert httpx.post(f"{url}/alert", json=webhook(alert(), later), headers=AUTH).json() == \
        {"dispatched": 1, "already_dispatched": 1}
    assert [r["body"]["client_payload"]["starts_at"] for r in github.received] == \
        ["2026-11-23T17:00:00Z", "2026-11-24T09:00:00Z"]
    assert "already dispatched" in log.read_text()
    github.close()


def test_a_failed_dispatch_is_sent_again_when_alertmanager_retries(relay):
    github = GitHubStandIn(status=503)
    url, _ = relay(github, GITHUB_TOKEN="t")
    assert httpx.post(f"{url}/alert", json=webhook(alert()), headers=AUTH).status_code == 502
    assert httpx.post(f"{url}/alert", json=webhook(alert()), headers=AUTH).status_code == 502
    assert len(github.received) == 2, "a dispatch GitHub refused is not remembered as done"
    github.close()

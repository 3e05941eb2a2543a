"""The closed loop with real parts on 127.0.0.1: app -> Prometheus -> Alertmanager -> relay -> "GitHub".

The serving app on the tiny pipeline's model (default drift settings: 100 predictions at least), Debian's
Prometheus with the project's config and rules (`monitoring/prometheus_local.py`, 1 s scrapes, every
alert's `for` shortened to 0s), Debian's Alertmanager with the project's config (the relay's address
the only change), the retrain relay (`python -m serving.relay`) and a local HTTP server standing in for
GitHub's dispatch API, which records what it receives.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import sys
import time

import httpx
import pandas as pd
import pytest
from monitoring_helpers import (
    ALERTS,
    LOCAL_SCRIPT,
    GitHubStandIn,
    Prometheus,
    alertmanager_command,
    load_yaml,
    relay_secret_file,
)
from test_monitoring_live import PASSWORD, USER, serving_env

from conftest import free_port, listening_port, process, wait_until_up
from product_classifier import paths

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(any(shutil.which(b) is None for b in ("prometheus", "prometheus-node-exporter",
                                                             "prometheus-alertmanager")),
                       reason="Debian's prometheus, node-exporter and alertmanager are needed: run `make sysdeps`"),
]

REPOSITORY = "rakuten-mlops/product-classifier"
DRIFT_EXPR = next(r["expr"] for g in load_yaml(ALERTS)["groups"] for r in g["rules"] if r["alert"] == "PredictionDrift")


@pytest.fixture(scope="module")
def loop(tiny_repo, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("drift-loop")
    github = GitHubStandIn()
    token = secrets.token_urlsafe(24)
    ports = {"prometheus": free_port()}  # Prometheus scrapes itself at the address it is given; the rest take port 0
    env = serving_env(tiny_repo / "models", tmp)
    env.pop("DRIFT_MIN_SAMPLES")  # the default minimum sample
    env.pop("CHALLENGER_MODELS_DIR")
    with contextlib.ExitStack() as stack:
        stack.callback(github.close)

        def start(name: str, command: list, env: dict | None = None, timeout: float = 30):
            log = tmp / f"{name}.log"
            proc = stack.enter_context(process(command, log, env))
            ports[name] = listening_port(proc, log, timeout)
            return proc, log

        secret = relay_secret_file(tmp / "relay_secret")  # Alertmanager sends it, the relay requires it
        relay = start("relay", [sys.executable, "-m", "serving.relay", "--port", 0, "--repository",
                                REPOSITORY, "--api-url", github.url],
                      {**serving_env(tiny_repo / "models", tmp), "GITHUB_TOKEN": token, "RELAY_SECRET_FILE": str(secret)})
        am = start("alertmanager", alertmanager_command(tmp / "alertmanager", 0,
                                                        f"http://127.0.0.1:{ports['relay']}/alert", secret))
        node = start("node", ["prometheus-node-exporter", "--web.listen-address=127.0.0.1:0",
                              "--collector.disable-defaults", "--collector.meminfo"])
        serving = start("serving", [sys.executable, "-m", "uvicorn", "serving.app:app", "--host", "127.0.0.1",
                                    "--port", 0], env, 240)
        prom_log = tmp / "prometheus.log"
        prom = stack.enter_context(process(
            [sys.executable, LOCAL_SCRIPT, "--serving", f"127.0.0.1:{ports['serving']}",
             "--node-exporter", f"127.0.0.1:{ports['node']}", "--listen", f"127.0.0.1:{ports['prometheus']}",
             "--alertmanager", f"127.0.0.1:{ports['alertmanager']}", "--alerts-for", "0s", "--scrape-interval", "1s",
             "--workdir", tmp / "prometheus"], prom_log)), prom_log
        wait_until_up(f"http://127.0.0.1:{ports['relay']}/health", *relay, 30)
        wait_until_up(f"http://127.0.0.1:{ports['alertmanager']}/-/ready", *am, 30)
        wait_until_up(f"http://127.0.0.1:{ports['node']}/metrics", *node, 30)
        wait_until_up(f"http://127.0.0.1:{ports['prometheus']}/-/ready", *prom, 60)
        wait_until_up(f"http://127.0.0.1:{ports['serving']}/health/ready", *serving, 240)
        yield {"serving": f"http://127.0.0.1:{ports['serving']}", "prometheus": Prometheus(
            f"http://127.0.0.1:{ports['prometheus']}"), "github": github, "token": token, "tmp": tmp,
               "repo": tiny_repo}


def predict_batch(base: str, products: list[dict]) -> list[dict]:
    with httpx.Client(base_url=base, timeout=120) as client:
        token = client.post("/token", data={"username": USER, "password": PASSWORD}).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        out = []
        for i in range(0, len(products), 32):
            response = client.post("/predict/batch", json={"items": products[i:i + 32]}, headers=auth)
            assert response.status_code == 200 and response.json()["failed"] == 0, response.text
            out.extend(r["prediction"] for r in response.json()["results"])
        return out


def scraped_after(prometheus: Prometheus, predictions: int) -> None:
    """Wait until Prometheus has scraped the window holding `predictions` predictions, then two rule evaluations."""
    prometheus.wait_for('max(model_drift_window_predictions{job="serving"})', predictions)
    prometheus.wait_for_rule_evaluations(2)


@pytest.fixture(scope="module")
def flooded(loop) -> dict:
    """20 in-distribution predictions, then 300 of one product: what the alert said after each."""
    prometheus, serving = loop["prometheus"], loop["serving"]
    val = validation_products(loop["repo"])
    in_distribution = predict_batch(serving, val[:20])
    scraped_after(prometheus, 20)
    quiet = {"alert": prometheus.query(DRIFT_EXPR), "p_value": prometheus.query('model_drift_p_value{job="serving"} >= 0')}
    codes = {p["prdtypecode"] for p in predict_batch(serving, [val[0]] * 300)}  # one product: its class floods in
    scraped_after(prometheus, 320)
    return {"quiet": quiet, "codes": codes, "alert": prometheus.query(DRIFT_EXPR), "in_distribution": in_distribution,
            "p_value": prometheus.query("model_drift_p_value")}


def test_drift_alert_stays_false_for_20_in_distribution_predictions_then_fires_on_a_flood_of_one_class(loop, flooded):
    assert flooded["quiet"]["alert"] == [], "no alert with fewer predictions than the minimum sample"
    assert flooded["quiet"]["p_value"] == [], "not enough data: no p-value"
    assert len(flooded["codes"]) == 1
    result = flooded["alert"]
    assert result, f"no drift alert after 300 predictions of class {flooded['codes']}: " \
                   f"{flooded['p_value']} ({len(flooded['in_distribution'])} in-distribution before)"
    version = httpx.get(f"{loop['serving']}/health/ready").json()["model_version"]
    assert result[0]["metric"]["version"] == version


def validation_products(repo) -> list[dict]:
    """The validation split's products (text only), as the API takes them."""
    frame = pd.read_csv(repo / paths.PROCESSED / paths.PRODUCTS_FILE, index_col=0, keep_default_na=False)
    frame = frame[frame["split"] == "val"]
    return [{"designation": d or "produit", "description": s} for d, s in zip(frame["designation"],
                                                                             frame["description"], strict=True)]


def test_the_alert_reaches_the_github_dispatch_api_through_alertmanager_and_the_relay(loop, flooded):
    """After the flood (the fixture, so this test runs alone too): PredictionDrift fires, Alertmanager routes
    it to the relay, the relay posts a repository_dispatch to the stand-in."""
    assert flooded["alert"], "the flood raised no alert"
    github = loop["github"]
    deadline = time.monotonic() + 120  # Alertmanager's group_wait is 10 s; the stand-in answers at once
    while not github.received:
        assert time.monotonic() < deadline, f"nothing reached the GitHub stand-in: {(loop['tmp'] / 'relay.log').read_text()}"
        time.sleep(1)
    [request] = github.received[:1]
    assert request["path"] == f"/repos/{REPOSITORY}/dispatches"
    assert request["headers"]["Authorization"] == f"Bearer {loop['token']}"
    assert request["headers"]["Accept"] == "application/vnd.github+json"
    body = request["body"]
    assert body["event_type"] == "retrain"
    payload = body["client_payload"]
    assert payload["alertname"] == "PredictionDrift" and payload["labels"]["action"] == "retrain"
    assert payload["model_version"] == httpx.get(f"{loop['serving']}/health/ready").json()["model_version"]
    assert "G-test p-value" in payload["annotations"]["description"]
    assert len(payload) <= 10, "GitHub accepts at most 10 top-level client_payload properties"
    for name in ("relay.log", "alertmanager.log"):
        assert loop["token"] not in (loop["tmp"] / name).read_text(), f"the token leaked into {name}"

"""The dashboard and alerts against the real thing.

Starts the serving app on the tiny pipeline's model (uvicorn), Debian's prometheus-node-exporter,
Debian's prometheus-alertmanager and Debian's Prometheus run by `monitoring/prometheus_local.py` (the project's config, targets rewritten,
1 s scrapes), sends real traffic, then asks Prometheus every dashboard query and every selector of the
alert rules: each must return data, with the labels its legend and grouping name.
"""

from __future__ import annotations

import contextlib
import math
import re
import secrets
import shutil
import sys
from pathlib import Path

import httpx
import pytest
from monitoring_helpers import (
    ALERTS,
    LOCAL_SCRIPT,
    Prometheus,
    alertmanager_command,
    concrete,
    dashboard_queries,
    grouping_labels,
    legend_labels,
    load_yaml,
    relay_secret_file,
)

from conftest import extract_raw_images, free_port, listening_port, process, wait_until_up
from product_classifier import paths

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(any(shutil.which(b) is None for b in ("prometheus", "prometheus-node-exporter",
                                                             "prometheus-alertmanager")),
                       reason="Debian's prometheus, node-exporter and alertmanager are needed: run `make sysdeps`"),
]

USER, PASSWORD = "monitoring-test", secrets.token_urlsafe(16)
PREDICTIONS_PER_ROUND = 6


def serving_env(models: Path, logs: Path) -> dict:
    from conftest import env

    # DRIFT_MIN_SAMPLES at its floor: the drift panels have data after this test's few predictions.
    # The same models as a shadow challenger: the champion-vs-challenger panels have data too.
    return {**env(), "MODELS_DIR": str(models), "SECRET_KEY": secrets.token_urlsafe(48), "DRIFT_MIN_SAMPLES": "10",
            "CHALLENGER_MODELS_DIR": str(models), "CHALLENGER_MODE": "shadow",
            "TEST_USER": USER, "TEST_USER_PASSWORD": PASSWORD, "RATE_LIMIT_PREDICT": "10000/minute",
            "SERVING_LOGGER_PATH": str(logs / "serving-requests.log")}


def send_traffic(base: str, images: list[Path]) -> int:
    """Token, ordinary predictions (a title, a description and a photo each: the panels about products
    without one read 0 from counters that start at 0), and a few client errors. Returns the predictions made."""
    with httpx.Client(base_url=base, timeout=60) as client:
        response = client.post("/token", data={"username": USER, "password": PASSWORD})
        assert response.status_code == 200, response.text
        auth = {"Authorization": f"Bearer {response.json()['access_token']}"}
        for i in range(PREDICTIONS_PER_ROUND):
            form = {"designation": f"Lot de {i + 2} figurines Star Wars", "description": "<p>Neuf, emball&eacute;</p>"}
            files = {"image": (images[i % len(images)].name, images[i % len(images)].read_bytes(), "image/jpeg")}
            response = client.post("/predict", data=form, files=files, headers=auth)
            assert response.status_code == 200, response.text
        for status, response in (
            (401, client.post("/token", data={"username": USER, "password": "wrong"})),
            (401, client.post("/predict", data={"designation": "piscine"})),
            (401, client.post("/predict", data={"designation": "piscine"}, headers={"Authorization": "Bearer x.y.z"})),
            (422, client.post("/predict", data={"description": "no designation"}, headers=auth)),
            (404, client.get("/no-such-route")),
        ):
            assert response.status_code == status, response.text
        for path in ("/", "/status", "/health/live", "/health/ready"):
            assert client.get(path).status_code == 200
        assert client.get("/model", headers=auth).status_code == 200
    return PREDICTIONS_PER_ROUND


@pytest.fixture(scope="module")
def prometheus(tiny_repo, tmp_path_factory) -> Prometheus:
    tmp = tmp_path_factory.mktemp("monitoring-live")
    images = extract_raw_images(tiny_repo / paths.RAW, tmp / "images")[:3]
    assert images, "the tiny pipeline left no training images"
    prometheus_port = free_port()  # Prometheus scrapes itself at the address it is given
    prom = f"http://127.0.0.1:{prometheus_port}"
    with contextlib.ExitStack() as stack:
        enter = stack.enter_context
        node_log, serving_log, prom_log = tmp / "node-exporter.log", tmp / "serving.log", tmp / "prometheus.log"
        am_log = tmp / "alertmanager.log"
        am_proc = enter(process(alertmanager_command(tmp / "alertmanager", 0, "http://127.0.0.1:9/nowhere",
                                                     relay_secret_file(tmp / "relay_secret")), am_log))
        node_proc = enter(process(["prometheus-node-exporter", "--web.listen-address=127.0.0.1:0",
                                   "--collector.disable-defaults", "--collector.cpu", "--collector.meminfo"],
                                  node_log))
        serving_proc = enter(process([sys.executable, "-m", "uvicorn", "serving.app:app", "--host", "127.0.0.1",
                                      "--port", 0], serving_log, serving_env(tiny_repo / "models", tmp)))
        am_port, node_port = listening_port(am_proc, am_log, 30), listening_port(node_proc, node_log, 30)
        serving_port = listening_port(serving_proc, serving_log, 240)
        serving, node = f"http://127.0.0.1:{serving_port}", f"http://127.0.0.1:{node_port}"
        prom_proc = enter(process([sys.executable, LOCAL_SCRIPT, "--serving", f"127.0.0.1:{serving_port}",
                                   "--node-exporter", f"127.0.0.1:{node_port}", "--listen", f"127.0.0.1:{prometheus_port}",
                                   "--alertmanager", f"127.0.0.1:{am_port}", "--scrape-interval", "1s", "--workdir", tmp / "prometheus"], prom_log))
        wait_until_up(f"{node}/metrics", node_proc, node_log, 30)
        wait_until_up(f"http://127.0.0.1:{am_port}/-/ready", am_proc, am_log, 30)
        wait_until_up(f"{prom}/-/ready", prom_proc, prom_log, 60)
        wait_until_up(f"{serving}/health/ready", serving_proc, serving_log, 240)
        client = Prometheus(prom)
        # Two rounds, each waited for, so that counters move inside the rate() windows.
        sent = 0
        for _ in range(2):
            sent += send_traffic(serving, images)
            client.wait_for('sum(model_predictions_total{job="serving"})', sent)
        client.wait_for_rule_evaluations(2)  # the rules have seen the traffic
        yield client


def test_every_target_is_scraped(prometheus):
    up = {r["metric"]["job"]: float(r["value"][1]) for r in prometheus.query("up")}
    assert up == {"serving": 1.0, "prometheus": 1.0, "node-exporter": 1.0, "alertmanager": 1.0}


def test_alert_rules_are_loaded_and_evaluate(prometheus):
    body = httpx.get(f"{prometheus.url}/api/v1/rules", timeout=10).json()
    loaded = {r["name"]: r for g in body["data"]["groups"] for r in g["rules"]}
    expected = {r["alert"] for g in load_yaml(ALERTS)["groups"] for r in g["rules"]}
    assert set(loaded) == expected
    for name, rule in loaded.items():
        assert rule["health"] == "ok", f"{name}: {rule.get('lastError')}"
    firing = {a["labels"]["alertname"] for a in httpx.get(f"{prometheus.url}/api/v1/alerts").json()["data"]["alerts"]}
    assert "ServiceDown" not in firing


QUERIES = dashboard_queries()


@pytest.mark.parametrize("query", QUERIES, ids=[f"{panel}[{target['refId']}]" for _, panel, target in QUERIES])
def test_dashboard_query_returns_data(prometheus, query):
    _, panel, target = query
    expr = concrete(target["expr"])
    result = prometheus.query(expr)
    assert result, f"panel {panel!r}: no data for {expr}"
    values = [float(r["value"][1]) for r in result]
    assert any(math.isfinite(v) for v in values), f"panel {panel!r}: only {values} for {expr}"
    for label in legend_labels(target.get("legendFormat")) | grouping_labels(expr):
        assert all(r["metric"].get(label) for r in result), f"panel {panel!r}: label {label!r} missing in {result}"


def selectors(expr: str) -> list[str]:
    """The `metric{matchers}` vector selectors of a PromQL expression."""
    return [m.group(0) for m in re.finditer(r"[a-zA-Z_:][\w:]*\{[^}]*\}", expr)]


ALERT_SELECTORS = sorted({s for g in load_yaml(ALERTS)["groups"] for r in g["rules"] for s in selectors(r["expr"])})
PANEL_SELECTORS = sorted({s for _, _, t in QUERIES for s in selectors(concrete(t["expr"]))})


@pytest.mark.parametrize("selector", sorted(set(ALERT_SELECTORS) | set(PANEL_SELECTORS)))
def test_selector_matches_real_series(prometheus, selector):
    """Every series an alert or a panel reads exists, with the label values it filters on.

    The one exception is the 5xx filter: the app must never answer 5xx, so the test cannot honestly make
    one; it checks that the same series exists with its `status` label instead.
    """
    if prometheus.query(selector):
        return
    assert re.search(r'status=~"5\.\."', selector), f"no series for {selector}"
    assert prometheus.query(re.sub(r'status=~"5\.\."', 'status=~".+"', selector)), f"no series for {selector}"

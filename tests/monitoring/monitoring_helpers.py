"""What the monitoring tests share: the project's monitoring files, parsed, and the dashboard's queries."""

from __future__ import annotations

import json
import math
import re
import secrets
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import yaml

PROJECT = Path(__file__).resolve().parents[2]
MONITORING = PROJECT / "monitoring"
PROMETHEUS_CONFIG = MONITORING / "prometheus" / "prometheus.yml"
ALERTS = MONITORING / "prometheus" / "alerts.yml"
ALERTS_TEST = MONITORING / "prometheus" / "alerts_test.yml"
LOCAL_SCRIPT = MONITORING / "prometheus_local.py"
ALERTMANAGER_CONFIG = MONITORING / "alertmanager" / "alertmanager.yml"
GRAFANA = MONITORING / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
COMPOSE_FILE = PROJECT / "docker-compose.monitoring.yml"

# Concrete values for Grafana's built-in variables when a query is sent to Prometheus directly.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "10m"}


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def panels(dashboard: dict):
    """Every panel of a dashboard, rows' nested panels included, rows themselves excluded."""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def dashboard_queries() -> list[tuple[str, str, dict]]:
    """(dashboard file, panel title, target) for every query of every provisioned dashboard."""
    out = []
    for path in DASHBOARDS:
        for panel in panels(json.loads(path.read_text())):
            out.extend((path.name, panel["title"], target) for target in panel.get("targets", []))
    return out


def concrete(expr: str) -> str:
    """A Grafana query with its built-in variables replaced, ready for Prometheus's HTTP API."""
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, GRAFANA_VARIABLES[name])
    leftover = re.findall(r"\$\w+", expr)
    assert not leftover, f"unsubstituted variables {leftover} in {expr}"
    return expr


def legend_labels(legend: str) -> set[str]:
    """The label names a legend format like `{{handler}} {{status}}` reads."""
    return set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend or ""))


def grouping_labels(expr: str) -> set[str]:
    """Label names that `by (...)` clauses of the outermost aggregations keep (le aside)."""
    names = set()
    for group in re.findall(r"\bby\s*\(([^)]*)\)", expr):
        names.update(n.strip() for n in group.split(",") if n.strip())
    return names - {"le"}



def alertmanager_command(workdir: Path, port: int, webhook_url: str, secret_file: Path) -> list:
    """Debian's Alertmanager on 127.0.0.1:`port` with the project's config, its webhooks sent to `webhook_url`
    with the relay secret read from `secret_file` (the compose file's relay address and secret path are the only
    changes), no clustering."""
    config = load_yaml(ALERTMANAGER_CONFIG)
    for receiver in config["receivers"]:
        for webhook in receiver.get("webhook_configs", []):
            webhook["url"] = webhook_url
            webhook["http_config"]["authorization"]["credentials_file"] = str(secret_file)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "alertmanager.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    return ["prometheus-alertmanager", f"--config.file={workdir / 'alertmanager.yml'}",
            f"--storage.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="]


def relay_secret_file(path: Path) -> Path:
    """A fresh relay secret at `path`, as `make relay-secret` writes it."""
    path.write_text(secrets.token_urlsafe(32) + "\n")
    return path


class Prometheus:
    def __init__(self, url: str):
        self.url = url

    def query(self, expr: str) -> list[dict]:
        body = httpx.post(f"{self.url}/api/v1/query", data={"query": expr}, timeout=10).json()
        assert body["status"] == "success", f"{expr}: {body}"
        return body["data"]["result"]

    def value(self, expr: str) -> float:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else math.nan

    def wait_for(self, expr: str, minimum: float, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while (value := self.value(expr)) < minimum or math.isnan(value):
            assert time.monotonic() < deadline, f"{expr} = {value} after {timeout} s, expected >= {minimum}"
            time.sleep(0.5)

    def last_evaluations(self) -> list[float]:
        """When each rule group was last evaluated (Unix seconds; 0 for a group not evaluated yet)."""
        groups = httpx.get(f"{self.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
        return [unix_time(g.get("lastEvaluation")) for g in groups]

    def wait_for_rule_evaluations(self, rounds: int = 2, timeout: float = 60) -> None:
        """Wait until every rule group has been evaluated `rounds` times from now (instead of a fixed sleep)."""
        deadline = time.monotonic() + timeout
        for _ in range(rounds):
            since = time.time()
            while min(self.last_evaluations(), default=0.0) <= since:
                assert time.monotonic() < deadline, f"rule groups not evaluated {rounds} times in {timeout} s"
                time.sleep(0.2)


def unix_time(rfc3339: str | None) -> float:
    """Prometheus's RFC 3339 times (nanoseconds, `Z`) as Unix seconds; the zero time when never evaluated."""
    if not rfc3339 or rfc3339.startswith("0001-"):
        return 0.0
    trimmed = re.sub(r"(\.\d{6})\d+", r"\1", rfc3339).replace("Z", "+00:00")
    return datetime.fromisoformat(trimmed).timestamp()


class GitHubStandIn:
    """POST /repos/{owner}/{name}/dispatches answered 204, as GitHub does; every request kept."""

    def __init__(self, status: int = 204):
        self.received: list[dict] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                stand_in.received.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(body)})
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

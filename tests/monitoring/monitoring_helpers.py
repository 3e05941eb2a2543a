"""What the monitoring tests share: the project's monitoring files, parsed, and the dashboard's queries."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parents[2]
MONITORING = PROJECT / "monitoring"
PROMETHEUS_CONFIG = MONITORING / "prometheus" / "prometheus.yml"
ALERTS = MONITORING / "prometheus" / "alerts.yml"
ALERTS_TEST = MONITORING / "prometheus" / "alerts_test.yml"
LOCAL_SCRIPT = MONITORING / "prometheus_local.py"
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


"""Static checks of the monitoring stack as code: Prometheus config and rules, compose file, Grafana provisioning."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from monitoring_helpers import (
    ALERTMANAGER_CONFIG,
    ALERTS,
    ALERTS_TEST,
    COMPOSE_FILE,
    DASHBOARDS,
    GRAFANA,
    LOCAL_SCRIPT,
    PROJECT,
    PROMETHEUS_CONFIG,
    dashboard_queries,
    load_yaml,
    panels,
)

needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool missing: run `make sysdeps`")


def run(*cmd: str | Path, cwd: Path = PROJECT) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, f"{cmd} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result


# --- Prometheus -------------------------------------------------------------------------------------------------

@needs_promtool
def test_prometheus_config_is_valid_and_loads_the_rules():
    out = run("promtool", "check", "config", PROMETHEUS_CONFIG).stdout
    assert "1 rule files found" in out


@pytest.mark.skipif(shutil.which("amtool") is None, reason="amtool missing: run `make sysdeps`")
def test_alertmanager_config_is_valid_and_routes_drift_to_the_retrain_relay(tmp_path):
    run("amtool", "check-config", ALERTMANAGER_CONFIG)
    # amtool's own routing: the drift alert (its labels from alerts.yml) reaches the retrain receiver, others do not.
    drift = next(r for g in load_yaml(ALERTS)["groups"] for r in g["rules"] if r["alert"] == "PredictionDrift")
    labels = [f"{k}={v}" for k, v in {"alertname": "PredictionDrift", **drift["labels"]}.items()]
    assert run("amtool", "config", "routes", "test", "--config.file", ALERTMANAGER_CONFIG, *labels).stdout.strip() == "retrain"
    assert run("amtool", "config", "routes", "test", "--config.file", ALERTMANAGER_CONFIG,
               "alertname=ServiceDown", "severity=critical").stdout.strip() == "default"
    config = load_yaml(ALERTMANAGER_CONFIG)
    [retrain] = [r for r in config["receivers"] if r["name"] == "retrain"]
    [hook] = retrain["webhook_configs"]
    host = hook["url"].split("/")[2].split(":")[0]
    services = load_yaml(COMPOSE_FILE)["services"]
    assert host in services, "the webhook is the compose relay service"
    # The relay's shared secret, from the compose secret both services mount (not a value in this file).
    authorization = hook["http_config"]["authorization"]
    assert authorization.get("type", "Bearer") == "Bearer" and "credentials" not in authorization
    secret = Path(authorization["credentials_file"])
    assert secret.parent == Path("/run/secrets")
    for name in ("alertmanager", host):
        assert secret.name in services[name]["secrets"], name
    assert services[host]["environment"]["RELAY_SECRET_FILE"] == str(secret)
    bad = tmp_path / "bad.yml"
    bad.write_text(ALERTMANAGER_CONFIG.read_text().replace("receiver: retrain", "receiver: nowhere"))
    assert subprocess.run(["amtool", "check-config", bad], capture_output=True).returncode != 0


@needs_promtool
def test_alert_rules_are_valid():
    run("promtool", "check", "rules", ALERTS)


@needs_promtool
def test_alert_rules_unit_tests_pass():
    run("promtool", "test", "rules", ALERTS_TEST)


def test_alerts_cover_the_required_conditions():
    rules = {r["alert"]: r for g in load_yaml(ALERTS)["groups"] for r in g["rules"]}
    assert set(rules) >= {"ServiceDown", "HighErrorRate", "HighPredictLatencyP95", "LowConfidenceShare",
                          "PredictionDrift", "ConfidenceDrift", "InputDrift"}
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
    tested = {t["alertname"] for case in load_yaml(ALERTS_TEST)["tests"] for t in case["alert_rule_test"]}
    assert tested == set(rules), "every alert has a promtool unit test"


def test_scrape_targets_are_compose_services_and_their_ports():
    services = load_yaml(COMPOSE_FILE)["services"]
    config = load_yaml(PROMETHEUS_CONFIG)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"serving", "prometheus", "node-exporter", "alertmanager"}
    for name, job in jobs.items():
        [target] = [t for static in job["static_configs"] for t in static["targets"]]
        host, port = target.split(":")
        assert host == name and host in services, target
        service = services[host]
        container_ports = {str(p).split(":")[-1] for p in service.get("ports", []) + service.get("expose", [])}
        assert port in container_ports, f"{target}: service {host} exposes {container_ports}"


@needs_promtool
def test_local_variant_rewrites_targets_and_stays_valid(tmp_path):
    out = run(sys.executable, LOCAL_SCRIPT, "--print-config", "--workdir", tmp_path, "--serving", "127.0.0.1:18000",
              "--node-exporter", "127.0.0.1:19100", "--listen", "127.0.0.1:19090", "--scrape-interval", "2s",
              "--alertmanager", "127.0.0.1:19093").stdout
    config = yaml.safe_load(out)
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert targets == {"serving": ["127.0.0.1:18000"], "node-exporter": ["127.0.0.1:19100"],
                       "prometheus": ["127.0.0.1:19090"], "alertmanager": ["127.0.0.1:19093"]}
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["127.0.0.1:19093"]
    assert config["global"]["scrape_interval"] == "2s"
    assert config["rule_files"] == [str(ALERTS)]
    # Everything but the targets and intervals is the project's config, not a second copy of it.
    original = load_yaml(PROMETHEUS_CONFIG)
    assert [j["metrics_path"] for j in config["scrape_configs"] if "metrics_path" in j] == \
        [j["metrics_path"] for j in original["scrape_configs"] if "metrics_path" in j]
    assert config["global"]["external_labels"] == original["global"]["external_labels"]
    run("promtool", "check", "config", tmp_path / "prometheus.yml")


def test_local_variant_refuses_a_job_without_local_address():
    result = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]);"
                             "import prometheus_local as p, yaml;"
                             "p.local_config(yaml.safe_load(p.CONFIG.read_text()), {'serving': 'x:1'}, p.CONFIG.parent)",
                             LOCAL_SCRIPT.parent], capture_output=True, text=True)
    assert result.returncode != 0 and "no local address for job(s) ['alertmanager', 'node-exporter', 'prometheus']" in result.stderr


# --- docker compose ---------------------------------------------------------------------------------------------

def compose_project(tmp_path: Path) -> Path:
    """A project directory for `docker-compose config`: the compose file's relative paths, plus an .env."""
    example = PROJECT / ".env.example"
    (tmp_path / ".env").write_text((example.read_text() if example.exists() else "") + "GRAFANA_ADMIN_PASSWORD=pw\n")
    return tmp_path


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose missing: run `make sysdeps`")
def test_compose_file_validates_with_docker_compose(tmp_path):
    project = compose_project(tmp_path)
    out = run("docker-compose", "--project-directory", project, "-f", COMPOSE_FILE, "config").stdout
    config = yaml.safe_load(out)
    assert set(config["services"]) == {"serving", "prometheus", "grafana", "node-exporter", "alertmanager",
                                       "retrain-relay"}
    # Every bind mount of the project's own files points at something that exists in the repository.
    for name, service in config["services"].items():
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if source.startswith(str(project)):
                relative = Path(source).relative_to(project)
                if relative.parts[0] == "monitoring":
                    assert (PROJECT / relative).exists(), f"{name}: {relative} is mounted but missing"


def test_compose_file_matches_the_compose_spec():
    run(Path(sys.executable).parent / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", COMPOSE_FILE)


def test_compose_services_are_pinned_healthchecked_and_share_a_network():
    compose = load_yaml(COMPOSE_FILE)
    services = compose["services"]
    assert services["serving"]["build"]["dockerfile"] == "Dockerfile.serve"
    assert "env_file" not in services["serving"], "serving gets its own settings, not all of .env"
    for name, service in services.items():
        if "image" in service and "build" not in service and service["image"] != services["serving"]["image"]:
            image, _, tag = service["image"].rpartition(":")
            assert image and re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: pin an exact image tag, not {tag!r}"
        assert service["healthcheck"]["test"], name
        assert service["networks"] == ["monitoring"], name
    assert set(compose["networks"]) == {"monitoring"}
    named = set(compose["volumes"])
    used = {v.split(":")[0] for s in services.values() for v in s.get("volumes", []) if not v.startswith(("/", "."))}
    assert used == named == {"prometheus-data", "grafana-data", "alertmanager-data"}


# --- Grafana ----------------------------------------------------------------------------------------------------

def test_grafana_datasource_is_the_compose_prometheus_with_a_fixed_uid():
    [datasource] = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    assert datasource["type"] == "prometheus" and datasource["uid"]
    assert datasource["url"] == "http://prometheus:9090"
    # $__rate_interval is at least four of these: it must be Prometheus's scrape interval.
    assert datasource["jsonData"]["timeInterval"] == load_yaml(PROMETHEUS_CONFIG)["global"]["scrape_interval"]


def test_dashboard_provider_path_is_where_compose_mounts_the_dashboards():
    [provider] = load_yaml(GRAFANA / "provisioning" / "dashboards" / "dashboards.yml")["providers"]
    mounts = dict(v.split(":")[:2] for v in load_yaml(COMPOSE_FILE)["services"]["grafana"]["volumes"])
    assert mounts["./monitoring/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./monitoring/grafana/provisioning"] == "/etc/grafana/provisioning"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_well_formed(path):
    dashboard = json.loads(path.read_text())
    [datasource] = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    assert dashboard["uid"] and dashboard["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    cells = {}
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]
    for panel in panels(dashboard):
        assert panel["description"], panel["title"]
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == datasource["uid"], panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_dashboard_shows_what_the_issue_asks_for():
    exprs = " ".join(t["expr"] for _, _, t in dashboard_queries())
    for metric in ("http_requests_total", "http_request_duration_seconds_bucket",
                   "http_request_duration_highr_seconds_bucket", "model_inference_seconds", "model_predictions_total",
                   "model_prediction_confidence_bucket", "model_drift_score",
                   "model_drift_p_value", "model_low_confidence_share", "model_inputs_total", "model_input_text_chars",
                   "model_challenger_agreement_total", "model_info", "node_cpu_seconds_total",
                   "node_memory_MemAvailable_bytes", "process_cpu_seconds_total", "process_resident_memory_bytes"):
        assert metric in exprs, f"no panel shows {metric}"


def test_dashboard_thresholds_are_the_alert_thresholds():
    """Panels colour red where the alert fires: both read the same number."""
    rules = {r["alert"]: r["expr"] for g in load_yaml(ALERTS)["groups"] for r in g["rules"]}
    threshold = {name: float(re.search(r">\s*([\d.]+)\s*$", expr.strip()).group(1)) for name, expr in rules.items()
                 if name in {"HighErrorRate", "LowConfidenceShare"}}
    drift_alpha = float(re.search(r"<\s*([\d.]+)\s*$", rules["PredictionDrift"].strip()).group(1))
    red, green = {}, {}
    for path in DASHBOARDS:
        for panel in panels(json.loads(path.read_text())):
            steps = panel["fieldConfig"]["defaults"].get("thresholds", {}).get("steps", [])
            for step in steps:
                if step["color"] == "red" and step["value"] is not None:
                    red[panel["title"]] = step["value"]
                if step["color"] == "green" and step["value"] is not None:
                    green[panel["title"]] = step["value"]
    assert red["Error ratio"] == threshold["HighErrorRate"]
    assert red["Low-confidence share"] == threshold["LowConfidenceShare"]
    assert green["Drift p-value"] == drift_alpha, "the p-value panel turns green where PredictionDrift stops"


def test_low_confidence_is_one_threshold_in_params_the_alert_the_panel_and_the_metric():
    """`fuse.low_confidence` (params.yaml) is where the drift reference counts low-confidence answers (and serving's
    share with it, from fusion.json); the alert and the dashboard read the confidence histogram's bucket there."""
    from product_classifier.pipeline.params import load_params
    from serving.metrics import CONFIDENCE_BUCKETS

    threshold = load_params(PROJECT / "params.yaml").fuse.low_confidence
    assert threshold in CONFIDENCE_BUCKETS, "the alert needs a histogram bucket at the threshold"
    rule = next(r for g in load_yaml(ALERTS)["groups"] for r in g["rules"] if r["alert"] == "LowConfidenceShare")
    panel = next(panel for path in DASHBOARDS for panel in panels(json.loads(path.read_text()))
                 if panel["title"] == "Low-confidence share")
    for name, expr, text in (("alert", rule["expr"], rule["annotations"]["description"]),
                             ("panel", " ".join(t["expr"] for t in panel["targets"]), panel["description"])):
        assert set(re.findall(r'le="([\d.]+)"', expr)) == {f"{threshold:g}"}, name
        assert f"below {threshold:g}" in text, name


@pytest.mark.skipif(not (shutil.which("node") and shutil.which("npm")), reason="node/npm missing: run `make sysdeps`")
def test_dashboards_match_grafanas_published_types(tmp_path):
    """Grafana's own types (npm @grafana/schema, at the compose image's version): the dashboard and every
    panel's options and field config, with unknown keys and values outside Grafana's enums refused."""
    out = run("make", "-s", "grafana-lint").stdout
    grafana_version = load_yaml(COMPOSE_FILE)["services"]["grafana"]["image"].rpartition(":")[2]
    assert f"grafana types: ok ({len(DASHBOARDS)} dashboard(s), @grafana/schema {grafana_version})" in out
    # The check bites: a misspelt panel key, an option Grafana dropped, a threshold mode it does not know.
    dashboard = json.loads(DASHBOARDS[0].read_text())
    first, *_ = panels(dashboard)
    first["gridPoz"] = first.pop("gridPos")
    timeseries = next(p for p in panels(dashboard) if p["type"] == "timeseries")
    timeseries["options"]["tooltip"] = {"show": True}
    stat = next(p for p in panels(dashboard) if p.get("fieldConfig", {}).get("defaults", {}).get("thresholds"))
    stat["fieldConfig"]["defaults"]["thresholds"]["mode"] = "absolut"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(dashboard))
    result = subprocess.run([sys.executable, PROJECT / "scripts" / "grafana_types.py", "--node-modules",
                             PROJECT / ".cache" / "node" / "node_modules", bad], capture_output=True, text=True)
    assert result.returncode != 0
    for expected in ("'\"gridPoz\"' does not exist", "'\"show\"' does not exist", "'\"absolut\"' is not assignable"):
        assert expected in result.stderr, result.stderr

"""Deployment files that need no container: `.env.example`, the compose files, nginx's limits, models' modes.

tests/deploy/containers/ runs the same files with podman; these checks are the fast half that runs everywhere.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import PROJECT
from serving.config import Settings

ENV_EXAMPLE = PROJECT / ".env.example"
COMPOSE_FILES = sorted(PROJECT.glob("docker-compose*.yml"))
NGINX = PROJECT / "deploy" / "nginx" / "nginx.conf"


def test_env_example_keeps_comments_on_their_own_lines():
    """Compose tools disagree on `NAME=value  # comment` (podman-compose keeps the comment in the value,
    docker-compose v1 turns `NAME=  # comment` into the comment): no line may hold both."""
    for number, line in enumerate(ENV_EXAMPLE.read_text().splitlines(), start=1):
        if line.strip() and not line.startswith("#"):
            assert re.fullmatch(r"[A-Z][A-Z0-9_]*=\S*( \S+)*", line), f".env.example:{number}: {line!r}"
            assert " #" not in line and "\t" not in line, f".env.example:{number}: comment after a value"


def test_env_example_documents_every_compose_variable():
    documented = {line.split("=", 1)[0].lstrip("# ").strip() for line in ENV_EXAMPLE.read_text().splitlines()
                  if "=" in line}
    for path in COMPOSE_FILES:
        used = set(re.findall(r"\$\{(\w+)", path.read_text()))
        assert used <= documented, f"{path.name}: {sorted(used - documented)} not in .env.example"
    assert {name.upper() for name in Settings.model_fields} <= documented


needs_compose = pytest.mark.skipif(shutil.which("docker-compose") is None,
                                   reason="docker-compose missing: run `make sysdeps`")
# What `make dagshub` and a person add to .env beside the serving settings: other components' credentials.
OTHER_SECRETS = {"DAGSHUB_USERNAME": "alice", "DAGSHUB_TOKEN": "dhtok-secret", "DAGSHUB_USER_TOKEN": "dhtok-secret",
                 "MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": "dhtok-secret",
                 "AWS_ACCESS_KEY_ID": "dhtok-secret", "AWS_SECRET_ACCESS_KEY": "dhtok-secret",
                 "GITHUB_TOKEN": "ghp-secret"}
FOREIGN = re.compile(r"^(DAGSHUB_|MLFLOW_TRACKING_|AWS_|GITHUB_TOKEN)")


def compose_config(path: Path, directory: Path, **values: str) -> subprocess.CompletedProcess:
    """`docker-compose config` of `path` with `.env.example` as `.env`, `values` appended (they win), and no
    compose variable from this process's environment."""
    directory.mkdir(exist_ok=True)
    (directory / ".env").write_text(ENV_EXAMPLE.read_text() + "".join(f"{k}={v}\n" for k, v in values.items()))
    used = set(re.findall(r"\$\{(\w+)", path.read_text()))
    env = {k: v for k, v in os.environ.items() if k not in used}
    return subprocess.run(["docker-compose", "--project-directory", directory, "-f", path, "config"],
                          capture_output=True, text=True, env=env)


def config_services(path: Path, directory: Path, **values: str) -> dict:
    result = compose_config(path, directory, **{"GRAFANA_ADMIN_PASSWORD": "a-password", **values})
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["services"]


def published(service: dict) -> list[tuple[str, str]]:
    """(host address, host port) of each published port, short (v1) or long (v2) syntax alike."""
    out = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            out.append((port.get("host_ip", ""), str(port.get("published", ""))))
        else:
            *host, _container = str(port).split(":")
            out.append((host[0] if len(host) == 2 else "", host[-1] if host else ""))
    return out


@needs_compose
@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_file_is_valid_and_serving_needs_no_host_setting(path, tmp_path):
    result = compose_config(path, tmp_path, GRAFANA_ADMIN_PASSWORD="a-password")
    assert result.returncode == 0, result.stderr
    schema = subprocess.run([Path(sys.executable).parent / "check-jsonschema", "--builtin-schema",
                             "vendor.compose-spec", path], capture_output=True, text=True)
    assert schema.returncode == 0, schema.stdout + schema.stderr
    services = yaml.safe_load(result.stdout)["services"]
    serving = [s for name, s in services.items() if name.startswith("serving")]
    assert serving
    for service in serving:
        # The image's CMD listens on 0.0.0.0 whatever HOST says; the healthcheck asks the network address.
        assert service["healthcheck"]["test"] == ["CMD", "python", "-m", "serving.healthcheck"]
        assert any("/app/models" in str(volume) for volume in service["volumes"])


def nginx_limits() -> dict[str, int]:
    """client_max_body_size per location of deploy/nginx/nginx.conf ("" for the http-level default), in bytes."""
    limits, location = {}, ""
    for line in NGINX.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if match := re.match(r"location\s+(?:=\s*)?(\S+)\s*\{", line):
            location = match.group(1)
        elif line == "}":
            location = ""
        elif match := re.match(r"client_max_body_size\s+(\d+)m;", line):
            limits[location] = int(match.group(1)) * 2**20
    return limits


def test_nginx_body_limits_are_the_apps_rounded_up_to_a_mib():
    """nginx refuses a body before the app does, and never one the app would take."""
    settings = Settings(_env_file=None, environment="development")
    limits = nginx_limits()
    for location, path in (("", "/predict"), ("/predict/batch", "/predict/batch")):
        app = settings.upload_limit(path)
        assert limits[location] == math.ceil(app / 2**20) * 2**20, (location, limits[location], app)


def test_pipeline_models_are_readable_by_other_users(tiny_models):
    """compose bind-mounts models/ into a container whose user (uid 10001) does not own it."""
    for root, dirs, files in os.walk(tiny_models):
        for name in dirs:
            mode = os.stat(Path(root, name)).st_mode
            assert mode & stat.S_IROTH and mode & stat.S_IXOTH, f"{Path(root, name)}: {stat.filemode(mode)}"
        for name in files:
            mode = os.stat(Path(root, name)).st_mode
            assert mode & stat.S_IROTH, f"{Path(root, name)}: {stat.filemode(mode)}"


@needs_compose
@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_every_published_port_is_on_127_0_0_1_unless_bind_address_opens_it(path, tmp_path):
    services = config_services(path, tmp_path / "default")
    ports = {name: published(service) for name, service in services.items() if service.get("ports")}
    assert ports, f"{path.name} publishes nothing"
    assert all(host == "127.0.0.1" for bound in ports.values() for host, _ in bound), ports
    opened = config_services(path, tmp_path / "opened", BIND_ADDRESS="0.0.0.0")
    assert {name: [host for host, _ in published(opened[name])] for name in ports} == \
        {name: ["0.0.0.0"] * len(bound) for name, bound in ports.items()}


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_no_service_runs_prometheus_lifecycle_api_or_anonymous_grafana(path):
    services = yaml.safe_load(path.read_text())["services"]
    for name, service in services.items():
        command = service.get("command", [])
        assert not any("web.enable-lifecycle" in str(part) for part in command), f"{name}: POST /-/quit for anyone"
        environment = service.get("environment", {})
        assert str(environment.get("GF_AUTH_ANONYMOUS_ENABLED", "false")).lower() == "false", name


@needs_compose
def test_monitoring_compose_refuses_to_start_without_a_grafana_admin_password(tmp_path):
    path = PROJECT / "docker-compose.monitoring.yml"
    for directory, values in ((tmp_path / "unset", {}), (tmp_path / "empty", {"GRAFANA_ADMIN_PASSWORD": ""})):
        result = compose_config(path, directory, **values)
        assert result.returncode != 0 and "set GRAFANA_ADMIN_PASSWORD in .env" in result.stderr, result.stderr
    services = config_services(path, tmp_path / "set", GRAFANA_ADMIN_PASSWORD="a-password")
    assert services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "a-password"


@needs_compose
@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_serving_gets_its_own_settings_and_no_other_components_secret(path, tmp_path):
    """`make dagshub` writes the DagsHub token into .env: it must not reach a serving container (nor any other
    service that does not use it), while every serving setting in .env still does."""
    services = config_services(path, tmp_path, **OTHER_SECRETS, RATE_LIMIT_PREDICT="7/minute", TOP_K="3")
    serving = {name: s for name, s in services.items() if name.startswith("serving")}
    assert serving
    expected = {name.upper() for name in Settings.model_fields} - {"HOST", "PORT"} | {"INFERENCE_THREADS"}
    for name, service in services.items():
        environment = service.get("environment", {})
        assert "dhtok-secret" not in str(environment) and "ghp-secret" not in str(environment), name
        assert "env_file" not in service, f"{name}: env_file hands it all of .env"
    for name, service in serving.items():
        environment = service["environment"]
        assert not [k for k in environment if FOREIGN.match(k)], f"{name} gets {sorted(environment)}"
        assert set(environment) - {"FORWARDED_ALLOW_IPS"} == expected, f"{name}: {sorted(environment)}"
        assert environment["RATE_LIMIT_PREDICT"] == "7/minute" and environment["TOP_K"] == "3", name
        assert environment["MODELS_DIR"] == "/app/models", name


def test_replicas_trust_forwarded_headers_from_their_network_only():
    compose = yaml.safe_load((PROJECT / "docker-compose.replicas.yml").read_text())
    services = compose["services"]
    [subnet] = [c["subnet"] for c in compose["networks"]["replicas"]["ipam"]["config"]]
    assert ipaddress.ip_network(subnet).is_private
    for name in ("serving-1", "serving-2"):
        assert services[name]["environment"]["FORWARDED_ALLOW_IPS"] == subnet, name
    # Trusted: the replicas network, where nothing but nginx, Redis and the replicas themselves live.
    on_it = {name for name, service in services.items() if "replicas" in service.get("networks", [])}
    assert on_it == {"proxy", "redis", "serving-1", "serving-2"}, on_it
    directives = [line.split("#", 1)[0].split() for line in NGINX.read_text().splitlines()]
    forwarded = [d for d in directives if d[:2] == ["proxy_set_header", "X-Forwarded-For"]]
    assert forwarded == [["proxy_set_header", "X-Forwarded-For", "$remote_addr;"]], \
        "nginx replaces the client's X-Forwarded-For, it does not append to it"


@needs_compose
@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_every_serving_container_has_a_memory_limit(path, tmp_path):
    """The kernel's bound under the app's own: a serving container cannot take the host down with it."""
    default = config_services(path, tmp_path / "default")
    smaller = config_services(path, tmp_path / "smaller", SERVING_MEMORY_LIMIT="1g")
    serving = [name for name in default if name.startswith("serving")]
    assert serving
    for name in serving:
        assert default[name].get("mem_limit") and smaller[name]["mem_limit"] != default[name]["mem_limit"], \
            (name, default[name].get("mem_limit"), smaller[name].get("mem_limit"))

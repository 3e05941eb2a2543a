"""docs/security.md is the inventory of what a deployment exposes: its tables of published ports, routes and
secrets must be what the compose files and the app actually publish, serve and hand out. A new port, a new route
without a token or a new secret in a service's environment fails here until the threat model lists it."""

from __future__ import annotations

import re
import secrets

import pytest
import yaml
from fastapi.testclient import TestClient
from test_deploy_files import COMPOSE_FILES, ENV_EXAMPLE, OTHER_SECRETS, config_services, needs_compose

from conftest import PROJECT
from serving.app import create_app
from serving.config import load_settings

SECURITY = PROJECT / "docs" / "security.md"
# Names that look like secrets and are settings.
NOT_SECRETS = {"RATE_LIMIT_TOKEN", "RATE_LIMIT_TOKEN_ACCOUNT", "ACCESS_TOKEN_EXPIRE_MINUTES"}


def doc_table(heading: str) -> list[dict[str, str]]:
    """The first Markdown table under `## heading` in docs/security.md, one dict per row (cells stripped)."""
    text = SECURITY.read_text()
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    header, _rule, *body = ([cell.strip() for cell in row.strip("|").split("|")] for row in rows)
    return [dict(zip(header, row, strict=True)) for row in body]


def names(cell: str) -> set[str]:
    return set(re.findall(r"`([^`]+)`", cell))


def is_secret(name: str) -> bool:
    return name not in NOT_SECRETS and bool(re.search(r"SECRET|PASSWORD|TOKEN|_KEY", name.upper()))


@needs_compose
def test_every_published_port_is_in_the_threat_model(tmp_path):
    documented = {(row["compose file"], row["service"], row["container port"]) for row in doc_table("Published ports")}
    published = set()
    for path in COMPOSE_FILES:
        services = config_services(path, tmp_path / path.stem)
        for name, service in services.items():
            for port in service.get("ports", []):
                target = port["target"] if isinstance(port, dict) else str(port).rsplit(":", 1)[-1].split("/")[0]
                published.add((path.name, name, str(target)))
    assert published, "no compose file publishes a port?"
    assert published == documented, f"not in docs/security.md: {published - documented}; " \
                                     f"listed but not published: {documented - published}"


def app_routes(app) -> set[tuple[str, str]]:
    """(method, path) of every route the app serves, included routers too (FastAPI keeps them apart)."""
    found = set()

    def walk(routes, prefix: str = ""):
        for route in routes:
            if hasattr(route, "original_router"):  # FastAPI >= 0.16x: an included router
                walk(route.original_router.routes, prefix + route.include_context.prefix)
            elif hasattr(route, "methods") and route.methods:
                found.update((method, prefix + route.path) for method in route.methods if method != "HEAD")

    walk(app.routes)
    return found


def test_every_route_and_its_authentication_is_in_the_threat_model(tmp_path):
    """Each route is asked without a token (no model loaded, no body): 401 means it needs the Bearer token;
    anything else means anyone may call it, and the table must say so."""
    settings = load_settings(environment="development", secret_key=secrets.token_urlsafe(48),
                             serving_logger_path=tmp_path / "serving.log", models_dir=tmp_path / "no-models")
    app = create_app(settings)
    documented = {(row["method"], row["route"].strip("`")): row["auth"] for row in doc_table("Routes")}
    served = app_routes(app)
    assert served == set(documented), f"not in docs/security.md: {served - set(documented)}; " \
                                      f"listed but not served: {set(documented) - served}"
    client = TestClient(app, raise_server_exceptions=False)  # no lifespan: nothing loads
    for (method, path), auth in documented.items():
        status = client.request(method, path).status_code
        assert (status == 401) == (auth == "Bearer"), f"{method} {path}: {status} without a token, docs say {auth!r}"


def secrets_table() -> dict[str, set[str]]:
    """Each secret name the table lists (every backticked name of its first column) -> the services reading it."""
    readers = {}
    for row in doc_table("Secrets"):
        services = {s.strip() for s in row["read by"].split(",")}
        for name in names(row["secret"]):
            readers[name] = services
    return readers


@needs_compose
@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_every_secret_a_service_receives_is_in_the_threat_model(path, tmp_path):
    """With every secret-like variable of .env.example (and other components' credentials) set, each service's
    secret-like environment variables and compose secrets must be listed for that service."""
    example = re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.MULTILINE)
    values = {name: "s3cr3t-value" for name in example if is_secret(name)}
    services = config_services(path, tmp_path, **{**values, **OTHER_SECRETS})
    readers = secrets_table()
    for name, service in services.items():
        received = {k for k in service.get("environment", {}) if is_secret(k)}
        received |= {s if isinstance(s, str) else s["source"] for s in service.get("secrets", [])}
        unlisted = {k for k in received if name not in readers.get(k, set())}
        assert not unlisted, f"{path.name}: {name} receives {sorted(unlisted)}, not listed for it in docs/security.md"


def test_every_secret_variable_of_env_example_is_in_the_threat_model():
    example = re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.MULTILINE)
    compose_secrets = {name for path in COMPOSE_FILES for name in yaml.safe_load(path.read_text()).get("secrets", {})}
    missing = {name for name in example if is_secret(name)} | compose_secrets
    missing -= set(secrets_table())
    assert not missing, f"secrets with no row in docs/security.md: {sorted(missing)}"

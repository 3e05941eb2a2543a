"""Deployment files that need no container: `.env.example`, the compose files, nginx's limits, models' modes.

tests/containers/ runs the same files with podman; these checks are the fast half that runs everywhere.
"""

from __future__ import annotations

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


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose missing: run `make sysdeps`")
@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_file_is_valid_and_serving_needs_no_host_setting(path, tmp_path):
    shutil.copy(ENV_EXAMPLE, tmp_path / ".env")
    result = subprocess.run(["docker-compose", "--project-directory", tmp_path, "-f", path, "config"],
                            capture_output=True, text=True)
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

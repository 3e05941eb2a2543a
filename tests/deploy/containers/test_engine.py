"""Which engine the container suite uses (CONTAINER_ENGINE, else `docker info`), and what `make sysdeps` installs
for the docker branch. Fast: nothing is built or run."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from conftest import PROJECT

from .conftest import docker_answers, engine_name

pytestmark = pytest.mark.container


def test_container_engine_names_the_engine_and_rejects_others():
    assert engine_name({"CONTAINER_ENGINE": "podman"}) == "podman"
    assert engine_name({"CONTAINER_ENGINE": "docker"}) == "docker"
    with pytest.raises(ValueError, match="CONTAINER_ENGINE='dockr'"):
        engine_name({"CONTAINER_ENGINE": "dockr"})


def test_default_engine_is_docker_exactly_where_a_docker_engine_answers():
    answers = shutil.which("docker") is not None and subprocess.run(["docker", "info"], capture_output=True,
                                                                    timeout=30).returncode == 0
    assert docker_answers() is answers
    assert engine_name({}) == ("docker" if answers else "podman")


def sysdeps_missing(path: str) -> list[str]:
    result = subprocess.run(["bash", PROJECT / "scripts/sysdeps.sh", "--dry-run"], env={"PATH": path},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("missing:"), result.stdout + result.stderr
    return result.stdout.split()[1:]


def test_sysdeps_adds_the_docker_cli_only_where_none_is_on_path(tmp_path):
    """A PATH with only the tools sysdeps.sh runs (real ones, linked): no docker there, so docker.io is missing;
    the same PATH with the docker CLI's directory: nothing to add for it (Docker's own packages stay alone)."""
    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in ("bash", "dpkg-query", "grep"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is needed (Debian/Ubuntu)")
        (bare / tool).symlink_to(shutil.which(tool))
    assert "docker.io" in sysdeps_missing(str(bare))
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker CLI on PATH: the other half needs one")
    assert "docker.io" not in sysdeps_missing(f"{bare}{os.pathsep}{os.path.dirname(docker)}")

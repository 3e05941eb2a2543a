"""The real app over the model the tiny pipeline trained (tests/conftest.py `tiny_repo`)."""

from __future__ import annotations

import contextlib
import io
import re
import secrets
import sys
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from conftest import env, extract_raw_images, listening_port, process, wait_until_up
from product_classifier import paths
from serving.app import create_app
from serving.config import load_settings

USER, PASSWORD = "alice", secrets.token_urlsafe(12)


def settings_for(models: Path, tmp: Path, **overrides):
    base = {"models_dir": models, "secret_key": secrets.token_urlsafe(48), "test_user": USER,
            "test_user_password": PASSWORD, "serving_logger_path": tmp / "logs" / "serving.log",
            "rate_limit_predict": "10000/minute", "rate_limit_token": "10000/minute", "users_file": tmp / "users.json"}
    return load_settings(**{**base, **overrides})


@contextlib.contextmanager
def served(models: Path, tmp: Path, **variables: str):
    """`python -m serving` (uvicorn) on 127.0.0.1, a port of its own, with the test user and `variables`;
    yields its base URL. cwd: an empty folder, so that no .env of the checkout is read."""
    tmp.mkdir(parents=True, exist_ok=True)
    variables = {**env(), "MODELS_DIR": str(models), "SECRET_KEY": secrets.token_urlsafe(48), "TEST_USER": USER,
                 "TEST_USER_PASSWORD": PASSWORD, "SERVING_LOGGER_PATH": str(tmp / "serving.log"), **variables}
    log = tmp / "stdout.log"
    with process([sys.executable, "-m", "serving", "--host", "127.0.0.1", "--port", 0], log, variables, tmp) as proc:
        base = f"http://127.0.0.1:{listening_port(proc, log, 180)}"
        wait_until_up(f"{base}/health/ready", proc, log, 180)
        yield base


def jpeg(size=(500, 500), mode="RGB", fmt="JPEG", blank=False, **save) -> bytes:
    """An encoded image: white with a red block in the middle (or all white), in any mode and format."""
    img = Image.new("RGB", size, "white")
    if not blank:
        w, h = size
        img.paste((200, 30, 30), (w // 4, h // 4, 3 * w // 4, 3 * h // 4))
    out = io.BytesIO()
    (img.convert("L").convert(mode) if mode.startswith("I") else img.convert(mode)).save(out, fmt, **save)
    return out.getvalue()


@pytest.fixture(scope="session")
def train_images(tiny_repo, tmp_path_factory) -> list[Path]:
    """The sample's usable training photos as files (it also holds truncated and blank ones, on purpose)."""
    products = pd.read_csv(tiny_repo / paths.PROCESSED / paths.PRODUCTS_FILE, index_col=0)
    names = sorted(paths.image_name(r.imageid, r.productid) for r in products.itertuples() if r.has_image)
    return extract_raw_images(tiny_repo / paths.RAW, tmp_path_factory.mktemp("train-images"), names=names)


@pytest.fixture(scope="session")
def serving_settings(tiny_models, tmp_path_factory):
    return settings_for(tiny_models, tmp_path_factory.mktemp("serving"))


@pytest.fixture(scope="session")
def client(serving_settings):
    """One app for the session (loading the model takes seconds); tests must not depend on each other's state."""
    with TestClient(create_app(serving_settings)) as c:
        yield c


def token_for(client, user=USER, password=PASSWORD) -> str:
    response = client.post("/token", data={"username": user, "password": password})
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


@pytest.fixture(scope="session")
def auth(client) -> dict:
    return {"Authorization": f"Bearer {token_for(client)}"}


def metric(client, name: str, **labels) -> float:
    """The sum of /metrics samples named `name` whose labels include `labels`."""
    text = client.get("/metrics").text
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}(?:\{{([^}}]*)\}})? (\S+)$", line)
        if match and all(f'{k}="{v}"' in (match.group(1) or "") for k, v in labels.items()):
            total += float(match.group(2))
    return total

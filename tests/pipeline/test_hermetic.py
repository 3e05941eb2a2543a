"""The suite is hermetic: the caller's shell reaches neither the tests nor what they start.

A developer with `MLFLOW_TRACKING_URI`, DagsHub or AWS credentials, a GitHub token, a Keras backend or
serving settings exported runs the same suite as CI does, and sends nothing to those services. The
outer test runs pytest on the probe below in a child process whose environment is hostile, with
the tracking URI pointing at a listening socket of its own, and checks that nobody connected.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from conftest import GIT_IDENTITY, PROJECT, env, leaky
from product_classifier.tracking import client as tracking_client
from product_classifier.tracking import settings

PROBE = "HERMETIC_PROBE"
HOSTILE = {"MLFLOW_EXPERIMENT_NAME": "leaked", "MLFLOW_TRACKING_USERNAME": "leaked", "DAGSHUB_TOKEN": "leaked",
           "AWS_ACCESS_KEY_ID": "leaked", "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "GITHUB_TOKEN": "leaked",
           "KERAS_BACKEND": "torch", "DVC_EXP_NAME": "leaked", "SECRET_KEY": "leaked", "TEST_USER_PASSWORD": "leaked",
           "RATE_LIMIT_STORAGE_URI": "redis://127.0.0.1:9"}


@pytest.mark.skipif(PROBE not in os.environ, reason="run by test_the_callers_environment_reaches_nothing")
def test_probe_sees_a_clean_environment(tmp_path, monkeypatch):
    for environment in (os.environ, env()):
        assert [name for name in environment if leaky(name) and name not in GIT_IDENTITY] == []
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".git").mkdir()  # the repository root of the default store
    assert settings.tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert tracking_client.log_stage("fuse", {"fuse": {"method": "weighted"}}, artifacts=[])
    assert (tmp_path / "mlflow.db").is_file()


def test_the_callers_environment_reaches_nothing():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        hostile = {**os.environ, **HOSTILE, PROBE: "1",
                   "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{listener.getsockname()[1]}"}
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                                 f"{__file__}::test_probe_sees_a_clean_environment"],
                                cwd=PROJECT, env=hostile, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected to the hostile tracking server

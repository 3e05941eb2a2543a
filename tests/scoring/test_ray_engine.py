"""The Ray engine (`--engine ray`, `predict.engine: ray`): the same rows as the local engine, on a real Ray
cluster of two nodes on the loopback (started once per session, stopped at the end), images from a folder or
from S3 (moto's server), and `dvc exp run -S predict.engine=ray` writing the same predictions.csv."""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import pandas as pd
import pytest
from test_score import run, unlabeled_products

from conftest import BIN, PROJECT, copy_repo, free_port, sh
from product_classifier import paths
from product_classifier.scoring.ray_data import MISSING_RAY

RAY = BIN / "ray"
MB100 = str(100 * 1024 * 1024)  # each node's object store: the models (60 MB) and small blocks fit


@pytest.fixture(scope="session")
def ray_cluster():
    """Two Ray nodes on 127.0.0.2 and 127.0.0.3 (loopback; Ray maps 127.0.0.1 to the machine's interface
    address), one CPU each, token authentication on; the environment a driver needs to reach it."""
    home = Path(tempfile.mkdtemp(prefix="ray-"))  # short: Ray's unix sockets live under it
    token = home / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    cluster_env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "RAY_USAGE_STATS_ENABLED": "0"}
    address = f"127.0.0.2:{free_port()}"
    common = f"--num-cpus 1 --object-store-memory {MB100} --disable-usage-stats"
    try:
        sh(f"{RAY} start --head --node-ip-address 127.0.0.2 --port {address.rpartition(':')[2]} "
           f"--include-dashboard=false --temp-dir {home} {common}", home, extra_env=cluster_env)
        sh(f"{RAY} start --address {address} --node-ip-address 127.0.0.3 {common}", home, extra_env=cluster_env)
        yield {**cluster_env, "RAY_ADDRESS": address}
    finally:
        sh(f"{RAY} stop --force", home, check=False, extra_env=cluster_env)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def products(tiny_repo, tmp_path_factory):
    """Twelve unlabeled products of the tiny sample: one image missing, one not an image at all."""
    home = tmp_path_factory.mktemp("ray-products")
    unlabeled_products(tiny_repo, home, 12)
    return home


def predict(tiny_repo, *args, env: dict | None = None):
    return run(tiny_repo, *args, check=True, env=env)


@pytest.fixture(scope="module")
def local_rows(tiny_repo, products):
    out = products / "local.csv"
    result = predict(tiny_repo, products / "products.csv", products / "images", "-o", out, "--chunk-size", 5)
    return pd.read_csv(out), result.stdout


def assert_same_rows(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert list(got.columns) == list(want.columns)
    assert got["productid"].tolist() == want["productid"].tolist()  # the input's order
    assert got["imageid"].tolist() == want["imageid"].tolist()
    assert got["prdtypecode"].tolist() == want["prdtypecode"].tolist()
    assert got["category"].tolist() == want["category"].tolist()
    assert got["modalities"].tolist() == want["modalities"].tolist()
    assert (got["confidence"] - want["confidence"]).abs().max() <= 1e-6


@pytest.mark.slow
def test_ray_cluster_scores_the_same_rows_as_the_local_engine(tiny_repo, products, local_rows, ray_cluster):
    want, local_summary = local_rows
    assert set(want["modalities"]) == {"text+image", "text"}  # the missing and the broken image: text alone
    out = products / "ray" / "scored.csv"
    # Batches of 5 over two actors, one per node: the rows come back in the input's order all the same.
    result = predict(tiny_repo, products / "products.csv", products / "images", "-o", out, "--engine", "ray",
                     "--actors", 2, "--batch-size", 5, env=ray_cluster)
    assert_same_rows(pd.read_csv(out), want)
    assert result.stdout.split(": ", 1)[1] == local_summary.split(": ", 1)[1]  # the same counts
    assert [p.name for p in out.parent.iterdir()] == ["scored.csv"]  # written atomically: no temporary left

    parquet = products / "ray" / "scored.parquet"
    predict(tiny_repo, products / "products.csv", products / "images", "-o", parquet, "--engine", "ray",
            "--batch-size", 4, env=ray_cluster)
    assert_same_rows(pd.read_parquet(parquet), want)


@pytest.fixture(scope="module")
def s3_images(products):
    """The products' image folder uploaded to moto's S3 server on 127.0.0.1."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                      aws_secret_access_key="test")
    s3.create_bucket(Bucket="catalogue")
    for image in (products / "images").iterdir():
        s3.upload_file(str(image), "catalogue", f"images/{image.name}")
    yield endpoint
    server.stop()


@pytest.mark.slow
def test_images_on_s3_score_like_images_on_disk(tiny_repo, products, local_rows, s3_images):
    """A local Ray (no RAY_ADDRESS), its workers reading s3:// with the credentials of their environment."""
    out = products / "s3" / "scored.csv"
    predict(tiny_repo, products / "products.csv", "s3://catalogue/images", "-o", out, "--engine", "ray",
            "--actors", 1, env={"AWS_ENDPOINT_URL": s3_images, "AWS_ACCESS_KEY_ID": "test",
                                "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"})
    assert_same_rows(pd.read_csv(out), local_rows[0])


@pytest.mark.slow
def test_dvc_exp_run_on_the_cluster_writes_the_same_predictions(tiny_repo, tmp_path, ray_cluster):
    repo = copy_repo(tiny_repo, tmp_path / "repo")
    run = sh("dvc exp run -S predict.engine=ray -S predict.batch_size=16", repo, extra_env=ray_cluster)
    assert "Running stage 'predict'" in run.stdout + run.stderr
    assert_same_rows(pd.read_csv(repo / paths.PREDICTIONS / paths.PREDICTIONS_FILE),
                     pd.read_csv(tiny_repo / paths.PREDICTIONS / paths.PREDICTIONS_FILE))


def test_without_ray_engine_ray_says_what_to_install(tmp_path):
    no_ray = "import sys; sys.modules['ray'] = None; from product_classifier.scoring.score import main; main()"
    result = subprocess.run([sys.executable, "-c", no_ray, tmp_path / "x.csv", tmp_path, "--engine", "ray",
                             "-o", tmp_path / "out.csv"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120, env={**os.environ, "PYTHONPATH": f"{PROJECT / 'src'}"})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: {MISSING_RAY}"], result.stderr
    assert "pip install 'product-classifier[scale]'" in MISSING_RAY
    assert list(tmp_path.iterdir()) == []


def test_the_serving_image_does_not_carry_ray():
    extras = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(req.startswith("ray[data]==") for req in extras["scale"])
    assert any("scale" in req for req in extras["dev"] if req.startswith("product-classifier["))
    assert not any(req.startswith(("ray", "product-classifier[")) for req in extras["serve"])
    # The image installs the project with the `serve` extra only (and once more without dependencies).
    installed = re.findall(r'pip install[^\n]*?"?\.(?:\[([\w,]+)\])?"?\s', (PROJECT / "Dockerfile.serve").read_text())
    assert installed and {extra for found in installed for extra in found.split(",") if extra} == {"serve"}


def test_kuberay_manifest_is_valid_kubernetes():
    """deploy/kuberay: a RayCluster whose pod templates pass the Kubernetes schema (strict: no unknown field)."""
    import kubernetes_validate
    import yaml

    manifest = yaml.safe_load((PROJECT / "deploy/kuberay/raycluster.yaml").read_text())
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayCluster")
    constraints = (PROJECT / "constraints.txt").read_text().splitlines()
    assert f"ray=={manifest['spec']['rayVersion']}" in constraints  # the cluster runs the driver's Ray
    groups = [manifest["spec"]["headGroupSpec"], *manifest["spec"]["workerGroupSpecs"]]
    for group in groups:
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())  # the CRD's map[string]string
        template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "check"},
                    "template": group["template"]}
        kubernetes_validate.validate(template, "1.37.0", strict=True)
        for container in group["template"]["spec"]["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert {"name": "RAY_AUTH_MODE", "value": "token"} in container["env"]
    # The check bites: a misspelled field is refused.
    broken = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "check"}, "template": {"spec": {
        "containers": [{**groups[0]["template"]["spec"]["containers"][0], "imagePullPolicyy": "Always"}]}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.37.0", strict=True)


def test_an_unreachable_cluster_gets_one_line_and_nothing_written(tiny_repo, products, tmp_path):
    out = tmp_path / "scored.csv"
    result = run(tiny_repo, products / "products.csv", products / "images", "-o", out, "--engine", "ray",
                 "--address", f"127.0.0.2:{free_port()}")  # nobody listens there
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach the Ray cluster at 127.0.0.2:"), result.stderr
    assert list(tmp_path.iterdir()) == []

"""Batch scoring as a command (`product-classifier-predict CSV IMAGES`): the tiny pipeline's models on
any products CSV + image folder, one row per product, one-line errors, nothing half-written."""

from __future__ import annotations

import subprocess

import pandas as pd
import pytest

from conftest import BIN, env, extract_raw_images, sh
from product_classifier import paths
from product_classifier.inference.imagestore import write_archive
from product_classifier.scoring.score import COLUMNS, MISSING_PANDAS

pytestmark = pytest.mark.slow
CLI = BIN / "product-classifier-predict"


def unlabeled_products(tiny_repo, home, n: int) -> pd.DataFrame:
    """The first `n` unlabeled products of the tiny sample in `home/products.csv`, their images in `home/images`:
    the second's image missing, the third's not an image at all."""
    raw = tiny_repo / paths.RAW
    x = pd.read_csv(raw / paths.X_TEST, index_col=0).head(n)
    images = home / "images"
    extract_raw_images(raw, images, "test", [paths.image_name(r.imageid, r.productid) for r in x.itertuples()])
    (images / paths.image_name(x.imageid.iloc[1], x.productid.iloc[1])).unlink()
    (images / paths.image_name(x.imageid.iloc[2], x.productid.iloc[2])).write_bytes(b"not a jpeg")
    x.to_csv(home / "products.csv")
    return x


@pytest.fixture(scope="module")
def products(tiny_repo, tmp_path_factory):
    """Five unlabeled products of the tiny sample: one image missing, one not an image at all."""
    home = tmp_path_factory.mktemp("batch")
    return home, unlabeled_products(tiny_repo, home, 5)


def run(tiny_repo, *args, check=False, env: dict | None = None):
    return sh(" ".join([str(CLI), "--models", str(tiny_repo / paths.MODELS), *map(str, args)]), tiny_repo, check=check,
              extra_env=env)


def test_scores_every_row_text_alone_without_a_usable_image(tiny_repo, products):
    home, x = products
    out = home / "out" / "scored.csv"
    result = run(tiny_repo, home / "products.csv", home / "images", "-o", out, "--chunk-size", 2, check=True)
    assert "5 product(s)" in result.stdout
    scored = pd.read_csv(out)
    assert list(scored.columns) == list(COLUMNS)
    assert scored["productid"].tolist() == x["productid"].tolist()
    assert scored["modalities"].tolist() == ["text+image", "text", "text", "text+image", "text+image"]
    # The same predictor as the predict stage: same products, same answers, whatever the chunking.
    staged = pd.read_csv(tiny_repo / paths.PREDICTIONS / paths.PREDICTIONS_FILE).set_index("productid")
    for row in scored[scored["modalities"] == "text+image"].itertuples():
        assert row.prdtypecode == staged.at[row.productid, "prdtypecode"]
        assert row.confidence == pytest.approx(staged.at[row.productid, "confidence"], abs=1e-5)


def test_a_folder_inside_a_zip_archive_scores_as_the_same_folder_does(tiny_repo, products, tmp_path):
    """The form the predict stage reads data/raw's archive in (`zip://image_test::...`), with the same answers."""
    home, _ = products
    archive = tmp_path / "photos.zip"
    write_archive(archive, sorted((f"image_test/{p.name}", p.read_bytes()) for p in (home / "images").iterdir()))
    outs = {}
    for kind, images in (("folder", home / "images"), ("archive", f"zip://image_test::{archive}")):
        outs[kind] = tmp_path / f"{kind}.csv"
        run(tiny_repo, home / "products.csv", images, "-o", outs[kind], check=True)
    assert outs["archive"].read_text() == outs["folder"].read_text()
    result = run(tiny_repo, home / "products.csv", f"zip://image_nope::{archive}", "-o", tmp_path / "x.csv")
    assert result.returncode == 1 and "error: " in result.stderr and "no folder image_nope/ in the archive" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "x.csv").exists()


@pytest.mark.parametrize("breakage, message", [
    ("missing_column", "missing column(s) imageid"),
    ("not_csv", "malformed CSV"),
    ("no_folder", "image folder not found"),
    ("no_file", "file not found"),
])
@pytest.mark.parametrize("engine", ["local", "ray"])
def test_bad_input_gets_one_line_and_writes_nothing(tiny_repo, products, tmp_path, breakage, message, engine):
    home, x = products
    csv, images = tmp_path / "in.csv", home / "images"
    if breakage == "missing_column":
        x.drop(columns="imageid").to_csv(csv)
    elif breakage == "not_csv":
        csv.write_text(',designation,description,productid,imageid\n0,"unclosed,x,1,2\n')
    elif breakage == "no_folder":
        x.to_csv(csv)
        images = tmp_path / "nowhere"
    out = tmp_path / "scored.csv"
    result = run(tiny_repo, csv, images, "-o", out, "--engine", engine)  # Ray: refused before it starts
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.glob("scored*")) == [] and list(tmp_path.glob(".scored*")) == []


def test_without_pandas_says_what_to_install(tiny_repo, products, tmp_path):
    """pandas is in the `batch` and `pipeline` extras, not in `serve` (the serving image): one line, not a traceback."""
    home, _ = products
    no_pandas = "import sys; sys.modules['pandas'] = None; from product_classifier.scoring.score import main; main()"
    result = subprocess.run([BIN / "python", "-c", no_pandas, home / "products.csv", home / "images",
                             "--models", tiny_repo / paths.MODELS, "-o", tmp_path / "out.csv"],
                            cwd=tiny_repo, env=env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: {MISSING_PANDAS}"], result.stderr
    assert "pip install 'product-classifier[batch]'" in MISSING_PANDAS
    assert list(tmp_path.iterdir()) == []

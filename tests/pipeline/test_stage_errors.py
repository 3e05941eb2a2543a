"""Bad input to each stage ends with one line naming the problem, and leaves no output behind."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from conftest import PROJECT, env, raw_images, rewrite_raw_images
from product_classifier import paths

pytestmark = pytest.mark.slow


def run_stage(name: str, cwd: Path, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PROJECT / "stages" / f"{name}.py")], cwd=cwd,
                          env={**env(), **(extra_env or {})}, capture_output=True, text=True, timeout=600)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and not _is_tf_noise(line)]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _is_tf_noise(line: str) -> bool:  # TensorFlow's C++ start-up chatter, not ours
    return line.startswith(("I0000", "W0000", "E0000", "WARNING: All log messages")) or "oneDNN" in line or "cuda" in line


def no_leftovers(folder: Path) -> bool:
    return not any(p.name.startswith(".") and ".tmp-" in p.name for p in folder.rglob("*"))


@pytest.fixture
def workdir(tiny_repo, tmp_path):
    """A copy of the tiny repo's raw data and params, to break in various ways."""
    shutil.copytree(tiny_repo / "data/raw", tmp_path / "data/raw")
    shutil.copy(tiny_repo / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


def first_image(raw: Path) -> str:
    """The first product's image, as data/raw's archive names it."""
    row = pd.read_csv(raw / paths.X_TRAIN, index_col=0).iloc[0]
    return paths.image_member("train", row.imageid, row.productid)


def damage_entry(archive: Path, name: str) -> None:
    """Flip a byte inside one entry's data, so that reading it fails its CRC check (the archive stays readable)."""
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo(name)
    data = bytearray(archive.read_bytes())
    archive.unlink()  # maybe a hard link into the DVC cache: never written through
    offset = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)  # the local header's size
    data[offset + info.compress_size // 2] ^= 0xFF
    archive.write_bytes(bytes(data))


def blank_jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (500, 500), "white").save(out, format="JPEG")
    return out.getvalue()


def edit_csv(path: Path, fn) -> None:
    df = pd.read_csv(path, index_col=0, keep_default_na=False)
    fn(df)
    df.to_csv(path)


BREAKAGES = {
    "missing_file": (lambda raw: (raw / paths.Y_TRAIN).unlink(), [f"{paths.Y_TRAIN}: file not found"]),
    "malformed_csv": (lambda raw: (raw / paths.X_TRAIN).write_text(',designation,description\n0,"unclosed,x\n'),
                      [f"{paths.X_TRAIN}: malformed CSV"]),
    "missing_column": (lambda raw: edit_csv(raw / paths.X_TRAIN, lambda df: df.drop(columns="imageid", inplace=True)),
                       ["missing column(s) imageid"]),
    "unknown_label": (lambda raw: edit_csv(raw / paths.Y_TRAIN, lambda df: df.iloc.__setitem__((3, 0), 9999)),
                      ["row 3: unknown prdtypecode 9999"]),
    "non_integer_id": (lambda raw: edit_csv(raw / paths.X_TRAIN, lambda df: df.__setitem__("productid", df["productid"].astype(str).str.replace("^", "p", regex=True))),
                       ["productid must be an integer"]),
    "no_image_archive": (lambda raw: (raw / paths.IMAGE_ARCHIVE).unlink(), [paths.IMAGE_ARCHIVE, "not found"]),
    "image_archive_not_a_zip": (lambda raw: (raw / paths.IMAGE_ARCHIVE).write_bytes(b"<html>rate limited</html>"),
                                [paths.IMAGE_ARCHIVE, "not a valid zip archive"]),
    "no_image_at_all": (lambda raw: rewrite_raw_images(raw, dict.fromkeys(
        [f"image_train/{name}" for name in raw_images(raw)], None)), ["no folder image_train/ in the archive"]),
}


@pytest.mark.parametrize("case", sorted(BREAKAGES))
def test_preprocess_rejects_bad_input(workdir, case):
    breakage, fragments = BREAKAGES[case]
    breakage(workdir / "data/raw")
    result = run_stage("preprocess", workdir)
    assert_one_line_error(result, *fragments)
    assert not (workdir / "data/processed").exists() and no_leftovers(workdir)


BAD_ROWS = {
    "corrupt_image": lambda raw: rewrite_raw_images(raw, {first_image(raw): b"\xff\xd8\xff\xe0 garbage"}),
    "blank_image": lambda raw: rewrite_raw_images(raw, {first_image(raw): blank_jpeg()}),
    "missing_image": lambda raw: rewrite_raw_images(raw, {first_image(raw): None}),
    "damaged_archive_entry": lambda raw: damage_entry(raw / paths.IMAGE_ARCHIVE, first_image(raw)),
    "no_usable_word": lambda raw: edit_csv(raw / paths.X_TRAIN, lambda df: df.iloc.__setitem__((0, [0, 1]), [" 🎁 !! ", " "])),
    "empty_text": lambda raw: edit_csv(raw / paths.X_TRAIN, lambda df: df.iloc.__setitem__((0, [0, 1]), ["", ""])),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_one_bad_row_is_kept_and_counted(workdir, case):
    """A row whose image or text is unusable stays in its split (scored from the other input), and is counted."""
    before = pd.read_csv(workdir / paths.RAW / paths.X_TRAIN, index_col=0)
    BAD_ROWS[case](workdir / "data/raw")
    result = run_stage("preprocess", workdir)
    assert result.returncode == 0, result.stderr
    products = pd.read_csv(workdir / paths.PROCESSED / paths.PRODUCTS_FILE, index_col=0)
    assert len(products) == len(before) and set(products["split"]) == {"train", "val", "test"}
    column = "has_text" if case in ("no_usable_word", "empty_text") else "has_image"
    assert not products[column].iloc[0]
    counted = "without_text" if column == "has_text" else "without_image"
    assert f'"{counted}": {int((~products[column]).sum())}' in result.stdout


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"preprocess": {"image_size": 5}}, "preprocess.image_size"),
        ({"train": {"epochs": "many"}}, "train.epochs"),
        ({"fuse": {"method": "vote"}}, "fuse.method"),
    ],
)
def test_bad_param_values_are_named(workdir, change, fragment):
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    for section, values in change.items():
        params[section].update(values)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    assert_one_line_error(run_stage("preprocess", workdir), fragment, "params.yaml")


def test_invalid_yaml_is_one_line(workdir):
    (workdir / "params.yaml").write_text("data: [unclosed\n")
    assert_one_line_error(run_stage("download", workdir), "params.yaml is not valid YAML")


def test_training_without_preprocessed_data_says_what_to_run(workdir):
    assert_one_line_error(run_stage("train_lstm", workdir), "dvc repro preprocess")
    assert not (workdir / "models").exists() and not (workdir / "metrics").exists()


def test_evaluate_without_models_names_the_missing_artifacts(workdir, tiny_repo):
    shutil.copytree(tiny_repo / "data/processed", workdir / "data/processed")
    shutil.copytree(tiny_repo / "models/lstm", workdir / "models/lstm")
    assert_one_line_error(run_stage("evaluate", workdir), f"missing model artifact(s) {paths.BUNDLE_FILE}")
    shutil.copy(tiny_repo / "models" / paths.BUNDLE_FILE, workdir / "models")  # evaluate runs the served models:
    assert_one_line_error(run_stage("evaluate", workdir), "missing model artifact(s) "  # all those missing, named
                          f"{paths.FUSION}/{paths.FUSION_FILE}, {paths.VGG16}/{paths.META_FILE}, {paths.VGG16}/{paths.ONNX_FILE}")
    assert not (workdir / "metrics").exists()


def test_offline_imagenet_weights_fail_fast_with_what_to_do(workdir, tiny_repo, tmp_path):
    shutil.copytree(tiny_repo / "data/processed", workdir / "data/processed")
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["train"]["vgg16"]["weights"] = "imagenet"
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    # An empty KERAS_HOME: no cached weights; the download is attempted and cannot succeed here.
    result = run_stage("train_vgg16", workdir, {"KERAS_HOME": str(tmp_path / "keras-home"),
                                                "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"})
    assert_one_line_error(result, "train.vgg16.weights=imagenet", "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
                          "make weights FROM=", "none")
    assert not (workdir / "models").exists()

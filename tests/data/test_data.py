"""Data tests on the tiny pipeline's real outputs: schema, label set, sample realism, no leakage."""

from __future__ import annotations

import functools
import io
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import ExifTags, Image, ImageOps

from conftest import raw_images
from product_classifier import paths
from product_classifier.errors import ImageError
from product_classifier.inference.images import is_blank, load_image
from product_classifier.inference.labels import CLASSES, REAL_COUNTS
from product_classifier.inference.text import OOV, Vocabulary, clean_text, tokenize
from product_classifier.pipeline import sample
from product_classifier.pipeline.processed import Processed


@pytest.fixture(scope="module")
def raw(tiny_repo):
    return tiny_repo / "data/raw"


@pytest.fixture(scope="module")
def processed(tiny_repo):
    return Processed(tiny_repo / "data/processed")


def test_raw_files_have_the_real_schema(raw):
    x = pd.read_csv(raw / paths.X_TRAIN, keep_default_na=False)
    y = pd.read_csv(raw / paths.Y_TRAIN)
    assert list(x.columns) == ["Unnamed: 0", "designation", "description", "productid", "imageid"]
    assert list(y.columns) == ["Unnamed: 0", "prdtypecode"]
    assert (x["Unnamed: 0"] == y["Unnamed: 0"]).all()
    assert list(pd.read_csv(raw / "X_test_update.csv").columns) == list(x.columns)
    assert x["productid"].is_unique and (x["designation"].str.len() > 0).all()


def test_sample_keeps_the_real_label_set_and_mix(raw):
    counts = pd.read_csv(raw / paths.Y_TRAIN)["prdtypecode"].value_counts()
    assert set(counts.index) == set(CLASSES)
    assert counts.idxmax() == max(REAL_COUNTS, key=REAL_COUNTS.get)  # 2583 pool equipment is the largest


def test_sample_text_is_messy_like_the_real_one(raw):
    x = pd.read_csv(raw / paths.X_TRAIN, keep_default_na=False)
    empty = (x["description"] == "").mean()
    assert 0.25 < empty < 0.45
    text = " ".join(x["designation"]) + " ".join(x["description"])
    for marker in ("<br />", "&eacute;", "&#39;", "Ã"):
        assert marker in text, marker


@functools.cache
def train_images(raw: Path) -> dict[str, bytes]:
    return raw_images(raw)


def image_file(raw, row) -> io.BytesIO:
    """A training product's image file, from data/raw's archive."""
    return io.BytesIO(train_images(raw)[paths.image_name(row.imageid, row.productid)])


def test_raw_data_is_three_csvs_and_one_image_archive(raw):
    """What DVC hashes and checks on every `dvc status`: four files, whatever the number of images."""
    assert sorted(p.name for p in raw.iterdir()) == sorted([paths.X_TRAIN, paths.Y_TRAIN, paths.X_TEST, paths.IMAGE_ARCHIVE])
    x_train, x_test = (pd.read_csv(raw / name, index_col=0) for name in (paths.X_TRAIN, paths.X_TEST))
    assert len(train_images(raw)) == len(x_train) and len(raw_images(raw, "test")) == len(x_test)


def test_sample_images_are_padded_500px_jpegs(raw, x_train, image_kinds):
    for row in x_train.itertuples():
        if "unreadable" in image_kinds[row.Index]:
            continue
        with Image.open(image_file(raw, row)) as img:
            assert img.format == "JPEG" and img.size == (500, 500)
            arr = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
            assert arr[:5].min() > 200 or arr[:, :5].min() > 200 or arr[-5:].min() > 200  # white padding


# --- the rows the real catalogue has and the code must survive (sample.TEXT_QUIRKS, IMAGE_QUIRKS) ---
SCRIPTS = {"cyrillic": "[\u0400-\u04ff]", "greek": "[\u0370-\u03ff]", "cjk": "[\u4e00-\u9fff]"}


@pytest.fixture(scope="module")
def x_train(raw):
    return pd.read_csv(raw / paths.X_TRAIN, index_col=0, keep_default_na=False)


@pytest.fixture(scope="module")
def image_kinds(raw, x_train):
    """Per row: how its JPEG is stored, and whether the shared decoder finds a usable image in it."""
    kinds = {}
    for row in x_train.itertuples():
        path = image_file(raw, row)
        try:
            usable = not is_blank(load_image(path.getvalue(), 32))
        except ImageError:
            kinds[row.Index] = {"unreadable"}
            continue
        with Image.open(path) as img:
            kinds[row.Index] = {img.mode, "progressive" if img.info.get("progressive") else "baseline",
                                "rotated" if img.getexif().get(ExifTags.Base.Orientation, 1) != 1 else "upright",
                                "usable" if usable else "blank"}
    return kinds


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_sample_has_titles_in_other_scripts_that_clean_to_words(x_train, script):
    titles = x_train["designation"][x_train["designation"].str.contains(SCRIPTS[script])]
    assert len(titles) >= 2
    assert all(clean_text(t) for t in titles)


def test_sample_has_ligatures_and_mojibake(x_train):
    text = " ".join(x_train["designation"]) + " ".join(x_train["description"])
    for marker in ("œ", "æ", "ß", "Ã©"):
        assert marker in text, marker
    assert "coeur" in clean_text("cœur") and any("oeuvres" in clean_text(d) for d in x_train["designation"] if "œuvres" in d)


def test_sample_has_products_with_no_usable_word(x_train):
    none = [(d, s) for d, s in zip(x_train["designation"], x_train["description"], strict=True) if not clean_text(d, s)]
    assert len(none) >= 2 and all(d.strip() for d, _ in none)  # a title is there, but no word in it


def test_sample_has_empty_whitespace_only_and_very_long_descriptions(x_train):
    description = x_train["description"]
    assert (description == "").sum() >= 2
    assert ((description != "") & (description.str.strip() == "")).sum() >= 2
    assert (description.str.len() > 3000).sum() >= 2


@pytest.mark.parametrize("kind", ["blank", "unreadable", "CMYK", "L", "progressive", "rotated"])
def test_sample_has_awkward_images(image_kinds, kind):
    assert sum(kind in k for k in image_kinds.values()) >= 2, kind


def test_exif_rotated_sample_images_decode_upright(tiny_repo, raw, x_train, image_kinds):
    """The shared decoder turns a sideways photo upright: it matches the photo as drawn."""
    seed = yaml.safe_load((tiny_repo / "params.yaml").read_text())["data"]["seed"]
    labels = pd.read_csv(raw / paths.Y_TRAIN, index_col=0)["prdtypecode"]
    rotated = [i for i, k in image_kinds.items() if "rotated" in k]
    for index in rotated[:2]:
        row = x_train.loc[index]
        drawn = sample.make_image(int(labels[index]), np.random.default_rng([seed, int(index), 1])).resize((32, 32))
        decoded = load_image(image_file(raw, row).getvalue(), 32)
        sideways = np.asarray(drawn.transpose(Image.Transpose.ROTATE_90), dtype=float)
        assert np.abs(decoded - np.asarray(drawn, dtype=float)).mean() < np.abs(decoded - sideways).mean()


def test_preprocess_keeps_every_row_and_flags_unusable_inputs(processed, x_train, image_kinds):
    df = processed.products
    assert len(df) == len(x_train) and set(df["split"]) == {"train", "val", "test"}
    unusable = {i for i, k in image_kinds.items() if k & {"blank", "unreadable"}}
    assert set(df.index[~df["has_image"].to_numpy(dtype=bool)]) == unusable
    no_text = {i for i, d, s in zip(x_train.index, x_train["designation"], x_train["description"], strict=True)
               if not clean_text(d, s)}
    assert set(df.index[~df["has_text"].to_numpy(dtype=bool)]) == no_text
    assert (processed.tokens[~df["has_text"].to_numpy(dtype=bool), 0] == OOV).all()


def test_preprocess_workers_open_the_image_archive_once_each(raw, processed, tmp_path, monkeypatch):
    """Opening a store reads the archive's whole directory: once per chunk, the stage grew with the square of the
    data (284 s at 84,916 products, 2.6 s of every 512-image chunk spent re-reading 197,456 entries)."""
    from product_classifier.inference import imagestore
    from product_classifier.pipeline import preprocess

    opened = tmp_path / "opened"
    real_init = imagestore.ImageStore.__init__

    def counting_init(self, location):  # the real constructor; forked workers inherit it and append their pid
        with open(opened, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        real_init(self, location)

    monkeypatch.setattr(imagestore.ImageStore, "__init__", counting_init)
    names = paths.image_names(pd.read_csv(raw / paths.X_TRAIN, index_col=0))[:120]
    size = processed.images.shape[1]
    bad = preprocess.decode_images(paths.images_url(raw, "train"), names, tmp_path / "images.npy", size, workers=2)
    pids = opened.read_text().split()
    assert len(pids) == len(set(pids)) <= 2  # 8 chunks of 15 images, 2 workers: one store each
    assert np.array_equal(np.load(tmp_path / "images.npy"), processed.images[:120])
    assert all(row < 120 for row, _ in bad)


def test_evaluate_scores_every_test_product(tiny_repo, processed):
    metrics = json.loads((tiny_repo / "metrics/evaluate/metrics.json").read_text())
    df = processed.products[processed.products["split"] == "test"]
    assert metrics["test_size"] == len(df)
    assert metrics["without_image"] == int((~df["has_image"].astype(bool)).sum())
    assert metrics["without_text"] == int((~df["has_text"].astype(bool)).sum())
    predictions = pd.read_csv(tiny_repo / "metrics/evaluate/predictions.csv", keep_default_na=False)
    assert len(predictions) == len(df) and set(predictions["modalities"]) <= {"text+image", "text", "image", ""}


def test_splits_are_disjoint_and_stratified(processed):
    df = processed.products
    ids = {s: set(df.loc[df["split"] == s, "productid"]) for s in ("train", "val", "test")}
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]
    for split in ("train", "val", "test"):
        assert set(df.loc[df["split"] == split, "prdtypecode"]) == set(CLASSES)


def test_processed_arrays_line_up_with_the_rows(processed):
    n = len(processed.products)
    assert processed.images.dtype == np.uint8 and processed.images.shape[0] == n and processed.images.shape[3] == 3
    assert processed.tokens.shape[0] == n and processed.labels.shape == (n,)
    codes = np.asarray(CLASSES)[processed.labels]
    assert (codes == processed.products["prdtypecode"].to_numpy()).all()


def test_vocabulary_is_fitted_on_the_training_split_only(processed):
    vocab = Vocabulary.load(processed.vocab_path)
    df = processed.products
    words = lambda split: {t for d, s in zip(df.loc[df.split == split, "designation"], df.loc[df.split == split, "description"], strict=True) for t in tokenize(clean_text(d, s))}  # noqa: E731
    train_words = words("train")
    assert set(vocab.words) <= train_words
    assert (words("test") - train_words) .isdisjoint(vocab.words)


def test_tokens_are_the_shared_encoding_of_the_raw_text(processed):
    vocab = Vocabulary.load(processed.vocab_path)
    df = processed.products.head(30)
    expected = vocab.encode([clean_text(d, s) for d, s in zip(df["designation"], df["description"], strict=True)])
    assert (processed.tokens[:30] == expected).all()
    assert json.loads(processed.vocab_path.read_text())["max_len"] == processed.tokens.shape[1]

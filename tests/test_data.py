"""Data tests on the tiny pipeline's real outputs: schema, label set, sample realism, no leakage."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from product_classifier import paths
from product_classifier.labels import CLASSES, REAL_COUNTS
from product_classifier.preprocess import Processed
from product_classifier.text import Vocabulary, clean_text, tokenize


@pytest.fixture(scope="module")
def raw(tiny_repo):
    return tiny_repo / "data/raw"


@pytest.fixture(scope="module")
def processed(tiny_repo):
    return Processed(tiny_repo / "data/processed")


def test_raw_files_have_the_real_schema(raw):
    x = pd.read_csv(raw / "X_train_update.csv", keep_default_na=False)
    y = pd.read_csv(raw / "Y_train_CVw08PX.csv")
    assert list(x.columns) == ["Unnamed: 0", "designation", "description", "productid", "imageid"]
    assert list(y.columns) == ["Unnamed: 0", "prdtypecode"]
    assert (x["Unnamed: 0"] == y["Unnamed: 0"]).all()
    assert list(pd.read_csv(raw / "X_test_update.csv").columns) == list(x.columns)
    assert x["productid"].is_unique and (x["designation"].str.len() > 0).all()


def test_sample_keeps_the_real_label_set_and_mix(raw):
    counts = pd.read_csv(raw / "Y_train_CVw08PX.csv")["prdtypecode"].value_counts()
    assert set(counts.index) == set(CLASSES)
    assert counts.idxmax() == max(REAL_COUNTS, key=REAL_COUNTS.get)  # 2583 pool equipment is the largest


def test_sample_text_is_messy_like_the_real_one(raw):
    x = pd.read_csv(raw / "X_train_update.csv", keep_default_na=False)
    empty = (x["description"] == "").mean()
    assert 0.25 < empty < 0.45
    text = " ".join(x["designation"]) + " ".join(x["description"])
    for marker in ("<br />", "&eacute;", "&#39;", "Ã"):
        assert marker in text, marker


def test_sample_images_are_padded_500px_jpegs(raw):
    x = pd.read_csv(raw / "X_train_update.csv").head(20)
    for row in x.itertuples():
        with Image.open(paths.image_dir(raw, "train") / paths.image_name(row.imageid, row.productid)) as img:
            assert img.format == "JPEG" and img.size == (500, 500)
            arr = np.asarray(img)
            assert arr[:5].min() > 200 or arr[:, :5].min() > 200 or arr[-5:].min() > 200  # white padding


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

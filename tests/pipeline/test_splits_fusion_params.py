"""Pure pieces of the pipeline: splits, fusion, parameter validation."""

from __future__ import annotations

import numpy as np
import pytest

from product_classifier.errors import DataError, ParamError
from product_classifier.inference.fusion import Fusion, fit_fusion, softmax
from product_classifier.inference.labels import CLASSES, NUM_CLASSES, REAL_COUNTS
from product_classifier.pipeline.params import Params, parse_params
from product_classifier.pipeline.splits import stratified_split


# -- splits --
def test_split_is_stratified_seeded_and_covers_every_row():
    labels = np.repeat(np.arange(5), [100, 50, 30, 20, 10])
    a = stratified_split(labels, 0.15, 0.15, seed=1)
    assert (a == stratified_split(labels, 0.15, 0.15, seed=1)).all()
    assert (a != stratified_split(labels, 0.15, 0.15, seed=2)).any()
    assert set(a) == {"train", "val", "test"}
    for cls in range(5):
        in_cls = a[labels == cls]
        assert {"train", "val", "test"} <= set(in_cls)  # every class in every split
    assert abs((a == "test").mean() - 0.15) < 0.02 and abs((a == "val").mean() - 0.15) < 0.02


def test_split_refuses_classes_too_small_to_split():
    with pytest.raises(DataError, match="label 7 has fewer than 3 rows"):
        stratified_split(np.array([0] * 20 + [7, 7]), 0.15, 0.15, seed=0)


# -- fusion --
def _probs(rng, y, knows, sharp=6.0):
    """Confident and right where `knows`, unsure (flat, slightly wrong-leaning) elsewhere."""
    n = len(y)
    logits = rng.normal(size=(n, NUM_CLASSES))
    logits[np.arange(n), y] += np.where(knows, sharp, 0.0)
    return softmax(logits)


def test_weighted_fusion_is_a_product_of_experts():
    p_text, p_image = softmax(np.random.default_rng(0).normal(size=(4, NUM_CLASSES))), np.full((4, NUM_CLASSES), 1 / NUM_CLASSES)
    # A uniform image model leaves the ranking alone; weight 1 is the text model alone.
    assert (Fusion("weighted", 0.3).combine(p_text, p_image).argmax(1) == p_text.argmax(1)).all()
    assert np.allclose(Fusion("weighted", 1.0).combine(p_text, softmax(np.random.default_rng(1).normal(size=(4, NUM_CLASSES)))), p_text, atol=1e-6)
    out = Fusion("weighted", 0.5).combine(p_text, p_text[::-1])
    assert np.allclose(out.sum(1), 1.0)


@pytest.mark.parametrize("method", ["weighted", "stacking"])
def test_fitted_fusion_beats_each_model_when_they_err_on_different_items(method):
    rng = np.random.default_rng(0)
    y = rng.integers(0, NUM_CLASSES, size=600)
    # Text knows the even items, the image the odd ones (and a few both).
    text_knows, image_knows = np.arange(600) % 2 == 0, (np.arange(600) % 2 == 1) | (np.arange(600) % 7 == 0)
    p_text, p_image = _probs(rng, y, text_knows), _probs(rng, y, image_knows)
    fusion = fit_fusion(p_text[:400], p_image[:400], y[:400], method)
    acc = lambda p: (p.argmax(1)[400:] == y[400:]).mean()  # noqa: E731
    fused = fusion.combine(p_text, p_image)
    assert acc(fused) > max(acc(p_text), acc(p_image)) + 0.2
    assert Fusion.from_dict(fusion.to_dict()) == fusion


def test_weighted_fusion_picks_the_better_model_when_one_is_noise():
    rng = np.random.default_rng(3)
    y = rng.integers(0, NUM_CLASSES, size=300)
    p_text, p_noise = _probs(rng, y, np.ones(300, bool), 5), softmax(rng.normal(size=(300, NUM_CLASSES)) * 3)
    assert fit_fusion(p_text, p_noise, y, "weighted").text_weight >= 0.8


# -- labels and params --
def test_labels_are_the_27_real_codes():
    assert NUM_CLASSES == 27 and sum(REAL_COUNTS.values()) == 84916 and list(CLASSES) == sorted(CLASSES)


def test_params_yaml_is_the_one_place_of_every_value():
    """The typed model has no defaults: params.yaml parses whole, and a key missing from it is named."""
    from conftest import project_params

    assert isinstance(parse_params(project_params()), Params)
    raw = project_params()
    del raw["train"]["patience"]
    with pytest.raises(ParamError, match=r"^params.yaml: train.patience: Field required"):
        parse_params(raw)
    with pytest.raises(ParamError, match="fuse: Field required"):
        parse_params({k: v for k, v in project_params().items() if k != "fuse"})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"train": {"epochs": 0}}, "train.epochs: Input should be greater than or equal to 1"),
        ({"data": {"source": "kaggle"}}, "data.source"),
        ({"train": {"vgg16": {"weights": "resnet"}}}, "train.vgg16.weights"),
        ({"preprocess": {"image_size": "big"}}, "preprocess.image_size"),
        ({"train": {"epoch": 3}}, "train.epoch: Extra inputs are not permitted"),
        ({"data": {"url": "ftp://x/"}}, "data.url"),
    ],
)
def test_bad_params_give_one_line_naming_the_key(raw, message):
    from conftest import project_params

    with pytest.raises(ParamError, match=message) as info:
        parse_params(project_params(raw))
    assert "\n" not in str(info.value)

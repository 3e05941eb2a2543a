"""Late fusion of the text and image models' probabilities, fitted on the validation split."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from product_classifier.inference.labels import NUM_CLASSES

EPS = 1e-7
WEIGHT_GRID = np.round(np.linspace(0.0, 1.0, 21), 2)


def _log(p: np.ndarray) -> np.ndarray:
    return np.log(np.clip(p, EPS, 1.0))


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class Fusion:
    """`weighted`: a product of experts, softmax(w log p_text + (1-w) log p_image).
    `stacking`: multinomial logistic regression on both models' log-probabilities."""

    method: str
    text_weight: float = 0.5
    coef: list = field(default_factory=list)
    intercept: list = field(default_factory=list)

    def combine(self, p_text: np.ndarray, p_image: np.ndarray) -> np.ndarray:
        if self.method == "weighted":
            return softmax(self.text_weight * _log(p_text) + (1 - self.text_weight) * _log(p_image))
        x = np.hstack([_log(p_text), _log(p_image)])
        return softmax(x @ np.asarray(self.coef).T + np.asarray(self.intercept))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Fusion:
        return cls(**d)


def fit_fusion(p_text: np.ndarray, p_image: np.ndarray, labels: np.ndarray, method: str, seed: int = 0) -> Fusion:
    from sklearn.metrics import f1_score, log_loss  # fitting only: serving combines without scikit-learn

    if method == "weighted":
        # Best weighted F1 on validation; ties broken by log loss, then by the smaller weight.
        def score(w: float):
            probs = Fusion("weighted", float(w)).combine(p_text, p_image)
            f1 = f1_score(labels, probs.argmax(1), average="weighted", zero_division=0)
            return (-f1, log_loss(labels, probs, labels=range(NUM_CLASSES)), w)

        return Fusion("weighted", float(min(WEIGHT_GRID, key=score)))
    from sklearn.linear_model import LogisticRegression

    x = np.hstack([_log(p_text), _log(p_image)])
    clf = LogisticRegression(C=1.0, max_iter=2000, random_state=seed).fit(x, labels)
    coef = np.zeros((NUM_CLASSES, x.shape[1]))
    intercept = np.full(NUM_CLASSES, -30.0)  # classes unseen in validation get ~0 probability
    coef[clf.classes_] = clf.coef_
    intercept[clf.classes_] = clf.intercept_
    return Fusion("stacking", coef=coef.tolist(), intercept=intercept.tolist())

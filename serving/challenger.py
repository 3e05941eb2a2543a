"""A challenger beside the champion: a second model (CHALLENGER_MODELS_DIR), loaded by the same code.

`shadow`: the challenger predicts on the champion's requests in one background thread, off the request
path: the answer is the champion's, and the challenger's agreement, confidence and latency are exported.
When its bounded queue is full the shadow prediction is skipped (counted), never waited for; an error in
it is counted and logged, never returned.
`canary`: a sticky share of users (CHALLENGER_SHARE; a hash of the user name, so the same user always
gets the same model) is answered by the challenger.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

from product_classifier.inference.predictor import Prediction, Prepared, Product

from .metrics import AGREEMENT
from .service import ModelService

log = logging.getLogger("serving")
Mode = Literal["shadow", "canary"]


def user_bucket(user: str) -> float:
    """A stable number in [0, 1) for a user name (sha256), the same in every replica and restart."""
    return int.from_bytes(hashlib.sha256(user.encode()).digest()[:8], "big") / 2**64


class Challenger:
    def __init__(self, service: ModelService, mode: Mode, share: float, queue_size: int = 64):
        self.service, self.mode, self.share = service, mode, share
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="challenger-shadow")
        self._slots = threading.BoundedSemaphore(queue_size)
        if mode == "shadow":
            service.metrics.shadow()

    @property
    def version(self) -> str:
        return self.service.version

    def answers(self, user: str) -> bool:
        """Canary: whether this user's requests go to the challenger."""
        return self.mode == "canary" and user_bucket(user) < self.share

    def predict(self, product: Product) -> Prediction:
        """The challenger's own prediction (canary), through its own preprocessing."""
        return self.service.run_prediction([self.service.prepare(product)])[0]

    def shadow(self, product: Product, champion: Prediction, prepared: Prepared | None = None,
               image_size: int | None = None) -> None:
        """Queue a shadow prediction and return at once. `prepared`: the champion's preprocessing at
        `image_size`; when that is the challenger's size too, its image is reused, not decoded again."""
        if self.mode != "shadow":
            return
        if not self._slots.acquire(blocking=False):
            self.service.metrics.shadow_skipped.inc()
            return
        try:
            reused = prepared if image_size == self.service.predictor.image_size else None
            future = self._executor.submit(self._shadow, product, champion.code, reused)
        except RuntimeError:  # shut down
            self._slots.release()
            return
        future.add_done_callback(lambda _: self._slots.release())

    def _shadow(self, product: Product, champion_code: int, decoded: Prepared | None) -> None:
        metrics = self.service.metrics
        try:
            [prediction] = self.service.run_prediction([self.service.prepare(product, False, decoded)])
        except Exception as exc:  # noqa: BLE001 - the challenger never breaks anything: count and log
            metrics.challenger_errors.inc()
            log.warning("challenger %s failed in shadow: %s: %s", self.version, type(exc).__name__, exc)
            return
        metrics.agreement.labels(result=AGREEMENT[0] if prediction.code == champion_code else AGREEMENT[1]).inc()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def describe(self) -> dict:
        return {"version": self.version, "mode": self.mode, "share": self.share if self.mode == "canary" else None,
                "artifacts": self.service.identity.files}

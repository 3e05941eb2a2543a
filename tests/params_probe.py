"""Run one stage's code (`python params_probe.py <stage>`, from a reproduced repository) with params
that record every value read; print the dotted names read as JSON, and whether Keras ran.

Used by tests/pipeline/test_dvc_deps.py to derive each stage's params from what its code actually reads."""

from __future__ import annotations

import importlib.util
import json
import sys

from pydantic import BaseModel

from product_classifier.pipeline.backend import use_backend
from product_classifier.pipeline.params import load_params


class Recorder:
    """A read-only view of a params model that notes each leaf read (and each section dumped whole)."""

    def __init__(self, model: BaseModel, prefix: str, seen: set[str]):
        self._model, self._prefix, self._seen = model, prefix, seen

    def __getattr__(self, name: str):
        if name == "model_dump":
            return self._dump
        value = getattr(self._model, name)
        path = f"{self._prefix}.{name}" if self._prefix else name
        if isinstance(value, BaseModel):
            return Recorder(value, path, self._seen)
        self._seen.add(path)
        return value

    def _dump(self, **kwargs) -> dict:
        dumped = self._model.model_dump(**kwargs)
        self._seen.update(f"{self._prefix}.{key}" for key in dumped)
        return dumped


def main(stage: str) -> None:
    params = load_params()
    use_backend(params.train.backend)  # as the training stages do first; counted below if Keras ran
    spec = importlib.util.spec_from_file_location(f"stage_{stage}", f"stages/{stage}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    seen: set[str] = set()
    module.main.__wrapped__(Recorder(params, "", seen))
    print("PARAMS_READ " + json.dumps({"read": sorted(seen), "keras": "keras" in sys.modules}))


if __name__ == "__main__":
    main(sys.argv[1])

"""What every stage script shares, and only that: read params, time the stage, report user errors in one line."""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable

from product_classifier.errors import one_line_errors
from product_classifier.pipeline.params import Params, load_params


def stage(fn: Callable[[Params], dict | None]) -> Callable[[], None]:
    """Wrap a stage's `main(params)`: one `error: ...` line and exit 1 for any user mistake; on success one
    `<stage>: done in <s>s <summary>` line (a training stage's summary says which Keras backend ran)."""

    @functools.wraps(fn)
    def run() -> None:
        name = fn.__module__ if fn.__module__ != "__main__" else sys.argv[0]
        start = time.perf_counter()
        with one_line_errors():
            summary = fn(load_params())
        took = time.perf_counter() - start
        print(f"{name}: done in {took:.1f}s" + (f" {json.dumps(summary)}" if summary else ""))

    return run

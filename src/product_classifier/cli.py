"""What every stage script shares: read params, pick the backend, report user errors in one line."""

from __future__ import annotations

import contextlib
import functools
import json
import sys
import time
from collections.abc import Callable, Iterator

from .errors import UserError
from .params import Params, load_params


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """A user mistake or Ctrl-C ends the command with one `error: ...` line, never a traceback."""
    try:
        yield
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted; nothing was written", file=sys.stderr)
        sys.exit(130)


def stage(fn: Callable[[Params], dict | None]) -> Callable[[], None]:
    """Wrap a stage's `main(params)`: one `error: ...` line and exit 1 for any user mistake."""

    @functools.wraps(fn)
    def run() -> None:
        name = fn.__module__ if fn.__module__ != "__main__" else sys.argv[0]
        start = time.perf_counter()
        with one_line_errors():
            params = load_params()
            from .backend import use_backend

            use_backend(params.train.backend)
            summary = fn(params)
        took = time.perf_counter() - start
        # Say which Keras backend did the work, for the stages that used Keras.
        backend = f" [keras backend {sys.modules['keras'].backend.backend()}]" if "keras" in sys.modules else ""
        print(f"{name}: done in {took:.1f}s{backend}" + (f" {json.dumps(summary)}" if summary else ""))

    return run

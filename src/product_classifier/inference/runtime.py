"""The served runtime: ONNX Runtime sessions over the models the training stages export.

No Keras or TensorFlow here: serving installs only ONNX Runtime (docs/performance.md compares it with
TensorFlow's own forward pass). `INFERENCE_THREADS` sets ONNX Runtime's intra-op threads per session
(default: the CPUs this process may use, at most 2 - the serving machine's size; on a bigger machine
running one replica, set it to its core count; with several replicas, to cores / replicas).

Idle intra-op threads sleep instead of spinning (`session.intra_op.allow_spinning=0`): ONNX Runtime's
default busy-wait between calls took a core from the event loop, JPEG decoding and the other session
(measured on 2 cores, INT8 at 32 clients: 148 -> 178 req/s; docs/performance.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

Forward = Callable[[np.ndarray], np.ndarray]
DEFAULT_MAX_THREADS = 2


def default_threads() -> int:
    env = os.environ.get("INFERENCE_THREADS", "").strip()
    if env:
        return max(1, int(env))
    return max(1, min(DEFAULT_MAX_THREADS, len(os.sched_getaffinity(0))))


def onnx_forward(path: Path, threads: int | None = None) -> Forward:
    """The model at `path` as one function of a numpy batch (its only input) -> its only output."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or default_threads()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    name, dtype = inp.name, np.int32 if "int32" in inp.type else np.int64 if "int64" in inp.type else np.float32
    return lambda x: session.run(None, {name: np.ascontiguousarray(x, dtype=dtype)})[0]

"""Post-training INT8 quantization of the exported image model (ONNX Runtime static quantization).

Only the convolutional base is quantized (`Conv`, `MaxPool`, QDQ format): the dense head stays FP32,
as quantizing it wrecks the outputs. Weights are per channel and 7-bit (`reduce_range`): 8-bit signed
weights saturate the u8 x s8 multiply-add on CPUs without VNNI. Activation ranges are calibrated
(min/max) on a batch of training images. Whether the result may be served is the fuse stage's gate
(fit_fusion.py), not this module's.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from product_classifier.atomic import atomic_path

QUANTIZED_OPS = ["Conv", "MaxPool"]
CALIBRATION_BATCH = 32  # images per calibration run: bounds the memory the min/max collection needs


def _batches(name: str, calibration: np.ndarray) -> Iterator[dict[str, np.ndarray]]:
    for i in range(0, len(calibration), CALIBRATION_BATCH):
        yield {name: np.ascontiguousarray(calibration[i : i + CALIBRATION_BATCH], dtype=np.float32)}


def quantize_image_model(float_onnx: Path, out_path: Path, calibration: np.ndarray) -> None:
    """Write the INT8 version of the image model `float_onnx` to `out_path` (atomically), its activation
    ranges calibrated on `calibration` (a batch of images as the model takes them, uint8 pixels)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calibration) == 0:
        raise ValueError("quantize_image_model: no calibration image")
    (inp,) = onnx.load(str(float_onnx), load_external_data=False).graph.input

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._batches = _batches(inp.name, calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    with tempfile.TemporaryDirectory(prefix="quantize-") as work, atomic_path(out_path) as tmp:
        # Shape inference and graph folding first, as ONNX Runtime recommends (and warns without); on the default
        # model it changes no figure of the gate.
        prepared = Path(work) / "prepared.onnx"
        quant_pre_process(str(float_onnx), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared), str(tmp), Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=QUANTIZED_OPS,
            per_channel=True,
            reduce_range=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )

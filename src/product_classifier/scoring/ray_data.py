"""Batch scoring on Ray Data: the catalogue scored by a pool of actors, on one machine or a cluster.

The same rows as the local engine (score.py): each actor loads the served predictor once (the model files
travel through Ray's object store, so the workers need no copy of `models/`) and scores its batches through
`score.score_rows`. The products' CSV or Parquet is read in blocks with backpressure, so memory stays bounded
whatever its size; images come from a folder or any fsspec URL (imagestore.py; `s3://bucket/images`: the workers read it
with their own credentials, e.g. the nodes' AWS_* environment). The driver writes the rows in the input's
order, atomically (score.output). Ray is imported here only, and only when used: the `scale` extra.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path

from product_classifier import paths
from product_classifier.dataset import X_COLUMNS
from product_classifier.errors import UserError
from product_classifier.inference import bundle
from product_classifier.inference.imagestore import ImageStore, is_url
from product_classifier.inference.predictor import Predictor
from product_classifier.scoring.score import COLUMNS, EMPTY, chunk_images, output, read_chunks, score_rows, tally, warn

MISSING_RAY = "--engine ray needs Ray Data, which is not installed: pip install 'product-classifier[scale]'"
PROBLEM = "problem"  # the actors' extra column: why a row was left empty (dropped before writing)
TEXT = ("designation", "description")


def import_ray():
    """`ray` with Ray Data, or one line saying what to install."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in ("ray", "pyarrow"):
            raise
        raise UserError(MISSING_RAY) from None
    return ray


def connect(ray, address: str | None) -> None:
    """The cluster at `address` (else RAY_ADDRESS, Ray's own variable); a local Ray when neither is set. The
    workers run this package as the driver has it (shipped as a py_module), whatever the nodes have installed."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report leaves the machine unless asked for
    local = {} if address else {"include_dashboard": False}
    reach(address)
    try:
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # its per-run INFO lines and progress-bar notice
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False,
                 runtime_env={"py_modules": [str(Path(__file__).parents[1])]}, **local)  # product_classifier/
    except ConnectionError as exc:
        raise UserError(f"cannot reach the Ray cluster at {address}: {str(exc).splitlines()[0]}") from None


def reach(address: str | None, timeout: float = 10) -> None:
    """A `host:port` cluster address answers, or one line now (ray.init would retry for minutes)."""
    host, _, port = (address or "").rpartition(":")
    if not host or not port.isdigit() or "://" in host:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise UserError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None


def model_files(models: Path) -> dict[str, bytes]:
    """The bundle (bundle.json and the served files it lists, not the Keras files), by relative path: checked here,
    once, so that broken artifacts fail in one line in the driver, not in every actor."""
    served = bundle.load(models)
    return {rel: (models / rel).read_bytes() for rel in (paths.BUNDLE_FILE, *served.files)}


class Scorer:
    """One Ray actor: the predictor loaded once from the shipped model files, then batch after batch."""

    def __init__(self, models: list, images: str):
        import ray

        self.folder = tempfile.mkdtemp(prefix="product-classifier-models-")
        for name, data in ray.get(models[0]).items():
            path = Path(self.folder, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
        self.predictor = Predictor.load(self.folder, threads=max(1, int(cpus)), verify=False)  # the driver did
        self.images = ImageStore(images)

    def __call__(self, batch):
        import pandas as pd

        rows, problems = score_rows(self.predictor, batch, chunk_images(self.images, batch).get)
        why = iter(problems)
        for row in rows:
            row[PROBLEM] = next(why) if row["modalities"] == "" else None
        frame = pd.DataFrame(rows, columns=[*COLUMNS, PROBLEM]).replace({c: {"": None} for c in EMPTY})
        return frame.astype({"productid": "int64", "imageid": "int64", "prdtypecode": "Int64", "category": "string",
                             "confidence": "Float64", "modalities": "string", PROBLEM: "string"})

    def __del__(self):
        shutil.rmtree(getattr(self, "folder", ""), ignore_errors=True)


def read(ray, source: str):
    """The products, in blocks: Parquet (`.parquet`, a file or a folder of them) or the raw CSV layout. Reading
    takes no CPU of its own (it waits on I/O): the actors hold every CPU, and a read asking one would never run."""
    io = {"num_cpus": 0}
    if str(source).rstrip("/").endswith(".parquet"):
        return ray.data.read_parquet(source, columns=list(X_COLUMNS), **io)
    import pyarrow as pa
    from pyarrow import csv

    # As dataset.CSV_OPTIONS reads it: texts as strings ("" when empty, quoted line breaks kept), ids as integers.
    return ray.data.read_csv(
        source, parse_options=csv.ParseOptions(newlines_in_values=True),
        convert_options=csv.ConvertOptions(
            include_columns=list(X_COLUMNS), strings_can_be_null=False,
            column_types={**dict.fromkeys(TEXT, pa.string()), "productid": pa.int64(), "imageid": pa.int64()}), **io)


def check(source: str, images: str) -> None:
    """Fail fast, in one line, on what the driver can see: a local CSV's columns and a local image folder."""
    if not is_url(source) and not str(source).endswith(".parquet"):
        next(iter(read_chunks(Path(source), 1)), None)
    elif not is_url(source) and not Path(source).exists():
        raise UserError(f"{source}: file not found")
    ImageStore(images).check()


def score_ray(models: Path, source: str | os.PathLike, images: str | os.PathLike, out: Path, *, actors: int = 2,
              batch_size: int = 256, address: str | None = None, progress: bool = False) -> dict:
    """Score every product of `source` with `actors` Ray actors into `out`; the counts of `score.score_csv`."""
    ray = import_ray()  # first: without the extra, one line and nothing else
    for name, value in (("actors", actors), ("batch size", batch_size)):
        if value < 1:
            raise UserError(f"{name} must be at least 1, got {value}")
    # The workers' working folder is not ours: local paths are made absolute.
    source, images = (str(x if is_url(x) else Path(x).resolve()) for x in (source, images))
    check(source, images)
    files = model_files(Path(models))
    connect(ray, address)
    try:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # rows come back in the input's order
        context.enable_progress_bars = progress
        scored = read(ray, source).map_batches(
            Scorer, fn_constructor_kwargs={"models": [ray.put(files)], "images": images},
            batch_size=batch_size, batch_format="pandas", concurrency=actors, num_cpus=1)
        counts = {"products": 0, "not_scored": 0}
        problems: list[str] = []
        with output(Path(out)) as write:
            for batch in scored.iter_batches(batch_size=None, batch_format="pyarrow"):
                rows = batch.to_pylist()
                problems += [why for row in rows if (why := row.pop(PROBLEM)) is not None]
                write(rows)
                tally(counts, rows)
    finally:
        ray.shutdown()
    warn(problems)
    return counts

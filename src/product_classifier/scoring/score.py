"""Batch scoring: a products CSV (the `X_*.csv` layout) and its images (a folder, or imagestore.py's URLs) -> a
predictions CSV.

The same `Predictor` and preprocessing as serving and `evaluate`; the CSV is read and scored in
chunks, so a file of any size streams, and the output appears whole or not at all. A product whose
image is missing or unreadable is scored from its text alone (as serving does); one that cannot be
scored at all gets a row with empty prediction fields, is counted, and never stops the run.

Run it on any CSV + image folder: `product-classifier-predict X.csv images/ -o predictions.csv`
(or `python -m product_classifier.scoring.score ...`); the `predict` stage runs it on `X_test_update.csv`.
`--engine ray` scores the same rows on Ray Data actors, on one machine or a cluster (ray_data.py).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from tqdm import tqdm

from product_classifier import paths
from product_classifier.atomic import atomic_path
from product_classifier.errors import DataError, ImageError, UserError, one_line_errors
from product_classifier.inference.imagestore import ImageStore
from product_classifier.inference.labels import category
from product_classifier.inference.predictor import Predictor, Prepared, Product

COLUMNS = ("productid", "imageid", "prdtypecode", "category", "confidence", "modalities")
EMPTY = {"prdtypecode": "", "category": "", "confidence": "", "modalities": ""}  # a product that cannot be scored
ENGINES = ("local", "ray")
DEFAULT_CHUNK = 256
MISSING_PANDAS = "product-classifier-predict reads CSVs with pandas, which is not installed: " \
    "pip install 'product-classifier[batch]' (the serving image has no pandas)"
MISSING_PYARROW = "Parquet output needs pyarrow, which is not installed: pip install 'product-classifier[scale]'"


def read_chunks(csv_path: Path, chunksize: int):
    """The products CSV in checked chunks (dataset.py, on pandas: the `batch` and `pipeline` extras, not `serve`)."""
    try:
        from product_classifier.dataset import X_COLUMNS, iter_csv
    except ModuleNotFoundError as exc:
        if exc.name != "pandas":
            raise
        raise UserError(MISSING_PANDAS) from None
    return iter_csv(csv_path, X_COLUMNS, chunksize)


def count_rows(csv_path: Path, chunksize: int) -> int:
    """Products in the file (quoted multi-line descriptions count once), for the progress bar's total."""
    return sum(len(chunk) for chunk in read_chunks(csv_path, chunksize))


def prepare(predictor: Predictor, product: Product) -> tuple[Prepared | None, str | None]:
    """The prepared product, text alone if its image is unusable; (None, why) if it cannot be scored."""
    try:
        return predictor.prepare(product), None
    except ImageError:
        product = Product(product.designation, product.description)
    try:
        return predictor.prepare(product), None
    except DataError as exc:
        return None, str(exc)


def chunk_images(store: ImageStore, chunk) -> dict[str, bytes | None]:
    """The images of a chunk's products by file name, read in one call (None for a product that has none)."""
    return store.read_many(paths.image_names(chunk))


def score_rows(predictor: Predictor, chunk, image_of: Callable[[str], bytes | None]) -> tuple[list[dict], list[str]]:
    """One chunk of the CSV -> its output rows (in order) and why any product was not scored, in the order of
    the rows left empty. `image_of(file name)`: the image's bytes, None if there is none.
    Both engines score through here: the local one in this process, the Ray one inside each actor."""
    prepared, problems = [], []
    for row in chunk.itertuples():
        image = image_of(paths.image_name(row.imageid, row.productid))
        item, why = prepare(predictor, Product(row.designation, row.description, image))
        prepared.append(item)
        if why:
            problems.append(f"productid {row.productid}: {why}")
    scored = iter(predictor.predict_prepared([item for item in prepared if item is not None]))
    rows = []
    for row, item in zip(chunk.itertuples(), prepared, strict=True):
        out = {"productid": row.productid, "imageid": row.imageid}
        if item is None:
            out.update(EMPTY)
        else:
            pred = next(scored)
            out.update(prdtypecode=pred.code, category=category(pred.code), confidence=round(pred.confidence, 6),
                       modalities="+".join(pred.modalities))
        rows.append(out)
    return rows, problems


def check_inputs(csv_path: Path, images: str | Path, chunksize: int) -> int:
    """Fail fast with one line on a missing image folder or a bad CSV; the number of products otherwise."""
    if chunksize < 1:
        raise UserError(f"chunk size must be at least 1, got {chunksize}")
    ImageStore(images).check()
    return count_rows(Path(csv_path), chunksize)


def score_csv(predictor: Predictor, csv_path: Path, images: str | Path, out: Path, chunksize: int = DEFAULT_CHUNK,
              progress: bool | None = None, total: int | None = None) -> dict:
    """Score every product of `csv_path` (images in the store `images`: imagestore.py) into `out` (CSV, or Parquet
    for `.parquet`), atomically. Returns counts: `products`, `not_scored`, and products per modalities used
    (`text+image`, `text`)."""
    csv_path, out = Path(csv_path), Path(out)
    total = check_inputs(csv_path, images, chunksize) if total is None else total
    store = ImageStore(images)
    counts = {"products": 0, "not_scored": 0}
    problems: list[str] = []
    with output(out) as write, \
            tqdm(total=total, unit="product", desc="scoring", disable=None if progress is None else not progress,
                 file=sys.stderr) as bar:
        for chunk in read_chunks(csv_path, chunksize):
            rows, bad = score_rows(predictor, chunk, chunk_images(store, chunk).get)
            write(rows)
            problems += bad
            tally(counts, rows)
            bar.update(len(rows))
    warn(problems)
    return counts


def warn(problems: list[str]) -> None:
    if problems:
        print(f"warning: {len(problems)} product(s) not scored (empty prediction fields), first: {problems[0]}",
              file=sys.stderr)


@contextlib.contextmanager
def output(out: Path) -> Iterator[Callable[[list[dict]], None]]:
    """A function that appends rows to `out`, which appears whole once the block ends, or not at all.
    CSV, or Parquet when `out` ends with `.parquet` (typed columns, empty prediction fields as nulls)."""
    out = Path(out)
    if out.suffix != ".parquet":
        with atomic_path(out) as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, COLUMNS)
            writer.writeheader()
            yield writer.writerows
        return
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ModuleNotFoundError as exc:
        if exc.name.partition(".")[0] != "pyarrow":
            raise
        raise UserError(MISSING_PYARROW) from None
    schema = pa.schema([("productid", pa.int64()), ("imageid", pa.int64()), ("prdtypecode", pa.int64()),
                        ("category", pa.string()), ("confidence", pa.float64()), ("modalities", pa.string())])
    with atomic_path(out) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        yield lambda rows: writer.write_table(pa.Table.from_pylist(
            [{k: None if v == "" else v for k, v in row.items()} for row in rows], schema))


def tally(counts: dict, rows: Iterable[dict]) -> None:
    """Add `rows` to the summary: products, and products per modalities used (`not_scored` for empty rows)."""
    for row in rows:
        counts["products"] += 1
        key = row["modalities"] or "not_scored"
        counts[key] = counts.get(key, 0) + 1


def score(engine: str, models: Path, source: Path | str, images: Path | str, out: Path, *,
          chunk_size: int = DEFAULT_CHUNK, actors: int = 2, batch_size: int = DEFAULT_CHUNK,
          address: str | None = None) -> dict:
    """Score `source` with `engine`: `local` (this process, `chunk_size` products at a time) or `ray` (Ray Data:
    `actors` actors, `batch_size` products per batch, on the cluster at `address` or `RAY_ADDRESS`, else a local
    Ray). The same rows either way; the summary counts of `score_csv`."""
    if engine == "ray":
        from product_classifier.scoring.ray_data import score_ray

        return score_ray(models, source, images, out, actors=actors, batch_size=batch_size, address=address)
    if engine != "local":
        raise UserError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    total = check_inputs(Path(source), images, chunk_size)  # before loading the models: fail in a second
    return score_csv(Predictor.load(models), Path(source), images, out, chunk_size, total=total)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="product-classifier-predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("csv", help="products CSV (Parquet too with --engine ray; a path or, with Ray, any "
                        "fsspec URL): designation, description, productid, imageid")
    parser.add_argument("images", help="folder of image_{imageid}_product_{productid}.jpg files, or an fsspec URL: "
                        "zip://image_test::/path/images.zip (a folder in a zip archive), s3://bucket/images (s3fs)")
    parser.add_argument("-o", "--out", type=Path, default=paths.PREDICTIONS / paths.PREDICTIONS_FILE,
                        help="predictions to write, CSV or .parquet (default: %(default)s)")
    parser.add_argument("-m", "--models", type=Path, default=paths.MODELS, help="trained models (default: %(default)s)")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK, help="local engine: products per chunk "
                        "(default: %(default)s)")
    parser.add_argument("--engine", choices=ENGINES, default="local", help="local: this process; ray: Ray Data "
                        "actors, on a cluster (--address or RAY_ADDRESS) or a local Ray (default: %(default)s)")
    parser.add_argument("--address", help="ray engine: the cluster's address, e.g. 10.0.0.5:6379 (default: "
                        "RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--actors", type=int, default=2, help="ray engine: scoring actors, each loads the models "
                        "once (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_CHUNK, help="ray engine: products per batch "
                        "(default: %(default)s)")
    args = parser.parse_args(argv)
    with one_line_errors():
        counts = score(args.engine, args.models, args.csv, args.images, args.out, chunk_size=args.chunk_size,
                       actors=args.actors, batch_size=args.batch_size, address=args.address)
    print(f"{args.out}: {counts['products']} product(s): {counts}")


if __name__ == "__main__":
    main()

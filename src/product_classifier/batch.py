"""Batch scoring: a products CSV (the `X_*.csv` layout) and its image folder -> a predictions CSV.

The same `Predictor` and preprocessing as serving and `evaluate`; the CSV is read and scored in
chunks, so a file of any size streams, and the output appears whole or not at all. A product whose
image is missing or unreadable is scored from its text alone (as serving does); one that cannot be
scored at all gets a row with empty prediction fields, is counted, and never stops the run.

Run it on any CSV + image folder: `product-classifier-predict X.csv images/ -o predictions.csv`
(or `python -m product_classifier.batch ...`); the `predict` stage runs it on `X_test_update.csv`.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Iterable
from pathlib import Path

from tqdm import tqdm

from . import paths
from .atomic import atomic_path
from .cli import one_line_errors
from .errors import DataError, ImageError, UserError
from .labels import category
from .predictor import Predictor, Prepared, Product

COLUMNS = ("productid", "imageid", "prdtypecode", "category", "confidence", "modalities")
DEFAULT_CHUNK = 256
MISSING_PANDAS = "product-classifier-predict reads CSVs with pandas, which is not installed: " \
    "pip install 'product-classifier[batch]' (the serving image has no pandas)"


def read_chunks(csv_path: Path, chunksize: int):
    """The products CSV in checked chunks (dataset.py, on pandas: the `batch` and `pipeline` extras, not `serve`)."""
    try:
        from .dataset import X_COLUMNS, iter_csv
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


def score_rows(predictor: Predictor, chunk, images: Path) -> tuple[list[dict], list[str]]:
    """One chunk of the CSV -> its output rows (in order) and why any product was not scored."""
    prepared, problems = [], []
    for row in chunk.itertuples():
        image = images / paths.image_name(row.imageid, row.productid)
        item, why = prepare(predictor, Product(row.designation, row.description, image if image.is_file() else None))
        prepared.append(item)
        if why:
            problems.append(f"productid {row.productid}: {why}")
    scored = iter(predictor.predict_prepared([item for item in prepared if item is not None]))
    rows = []
    for row, item in zip(chunk.itertuples(), prepared, strict=True):
        out = {"productid": row.productid, "imageid": row.imageid}
        if item is None:
            out.update(prdtypecode="", category="", confidence="", modalities="")
        else:
            pred = next(scored)
            out.update(prdtypecode=pred.code, category=category(pred.code), confidence=round(pred.confidence, 6),
                       modalities="+".join(pred.modalities))
        rows.append(out)
    return rows, problems


def check_inputs(csv_path: Path, images: Path, chunksize: int) -> int:
    """Fail fast with one line on a missing folder or a bad CSV; the number of products otherwise."""
    if chunksize < 1:
        raise UserError(f"chunk size must be at least 1, got {chunksize}")
    if not Path(images).is_dir():
        raise UserError(f"{images}: image folder not found")
    return count_rows(Path(csv_path), chunksize)


def score_csv(predictor: Predictor, csv_path: Path, images: Path, out: Path, chunksize: int = DEFAULT_CHUNK,
              progress: bool | None = None, total: int | None = None) -> dict:
    """Score every product of `csv_path` (images in `images/`) into `out`, atomically.

    Returns counts: `products`, `not_scored`, and products per modalities used (`text+image`, `text`)."""
    csv_path, images, out = Path(csv_path), Path(images), Path(out)
    total = check_inputs(csv_path, images, chunksize) if total is None else total
    counts = {"products": 0, "not_scored": 0}
    problems: list[str] = []
    with atomic_path(out) as tmp, open(tmp, "w", newline="") as fh, \
            tqdm(total=total, unit="product", desc="scoring", disable=None if progress is None else not progress,
                 file=sys.stderr) as bar:
        writer = csv.DictWriter(fh, COLUMNS)
        writer.writeheader()
        for chunk in read_chunks(csv_path, chunksize):
            rows, bad = score_rows(predictor, chunk, images)
            writer.writerows(rows)
            problems += bad
            _count(counts, rows)
            bar.update(len(rows))
    if problems:
        print(f"warning: {len(problems)} product(s) not scored (empty prediction fields), first: {problems[0]}",
              file=sys.stderr)
    return counts


def _count(counts: dict, rows: Iterable[dict]) -> None:
    for row in rows:
        counts["products"] += 1
        key = row["modalities"] or "not_scored"
        counts[key] = counts.get(key, 0) + 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="product-classifier-predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("csv", type=Path, help="products CSV: unnamed index, designation, description, productid, imageid")
    parser.add_argument("images", type=Path, help="folder of image_{imageid}_product_{productid}.jpg files")
    parser.add_argument("-o", "--out", type=Path, default=paths.PREDICTIONS / paths.PREDICTIONS_FILE,
                        help="predictions CSV to write (default: %(default)s)")
    parser.add_argument("-m", "--models", type=Path, default=paths.MODELS, help="trained models (default: %(default)s)")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK, help="products per chunk (default: %(default)s)")
    args = parser.parse_args(argv)
    with one_line_errors():
        total = check_inputs(args.csv, args.images, args.chunk_size)  # before loading the models: fail in a second
        from .backend import use_backend

        use_backend()
        counts = score_csv(Predictor.load(args.models), args.csv, args.images, args.out, args.chunk_size, total=total)
    print(f"{args.out}: {counts['products']} product(s): {counts}")


if __name__ == "__main__":
    main()

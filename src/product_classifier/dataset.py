"""Reading and validating the raw Rakuten files (X_*.csv, Y_*.csv; the images are in imagestore.py's archive)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from product_classifier import paths
from product_classifier.errors import DataError
from product_classifier.inference.labels import CLASSES, INDEX

X_COLUMNS = ("designation", "description", "productid", "imageid")
Y_COLUMNS = ("prdtypecode",)


# How every raw CSV is read: unnamed integer index first, texts as strings ("" for empty), ids as integers.
CSV_OPTIONS = {"index_col": 0, "dtype": {"designation": "string", "description": "string"}, "keep_default_na": False,
               "na_values": {"productid": [""], "imageid": [""], "prdtypecode": [""]}}
CSV_ERRORS = (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError)


def read_csv(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """Read one raw CSV (first column: unnamed integer index) and check its columns."""
    if not path.exists():
        raise DataError(f"{path}: file not found")
    try:
        df = pd.read_csv(path, **CSV_OPTIONS)
    except CSV_ERRORS as exc:
        raise DataError(f"{path}: malformed CSV ({str(exc).splitlines()[0]})") from None
    return check_frame(df, path, columns)


def iter_csv(path: Path, columns: tuple[str, ...], chunksize: int) -> Iterator[pd.DataFrame]:
    """`read_csv` in chunks of `chunksize` rows, each checked, so a file of any size streams."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with pd.read_csv(path, chunksize=chunksize, **CSV_OPTIONS) as reader:
            for chunk in reader:
                yield check_frame(chunk, path, columns)
    except CSV_ERRORS as exc:
        raise DataError(f"{path}: malformed CSV ({str(exc).splitlines()[0]})") from None


def check_frame(df: pd.DataFrame, path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(map(str, df.columns))}")
    if not pd.api.types.is_integer_dtype(df.index):
        raise DataError(f"{path}: first column must be an integer row index")
    for col in ("productid", "imageid", "prdtypecode"):
        if col in columns and not pd.api.types.is_integer_dtype(df[col]):
            bad = pd.to_numeric(df[col], errors="coerce").isna()
            row = df.index[bad.to_numpy()][0]
            raise DataError(f"{path}: row {row}: {col} must be an integer, got {df.at[row, col]!r}")
    return df


def read_products(raw: Path) -> pd.DataFrame:
    """X_train joined with its labels, plus each product's image file name (in `paths.images_url(raw, "train")`)."""
    x = read_csv(raw / paths.X_TRAIN, X_COLUMNS)
    y = read_csv(raw / paths.Y_TRAIN, Y_COLUMNS)
    if not x.index.equals(y.index):
        raise DataError(f"{paths.X_TRAIN} and {paths.Y_TRAIN} do not have the same row index")
    unknown = ~y["prdtypecode"].isin(CLASSES)
    if unknown.any():
        row = y.index[unknown.to_numpy()][0]
        raise DataError(
            f"{paths.Y_TRAIN}: row {row}: unknown prdtypecode {y.at[row, 'prdtypecode']} "
            f"({int(unknown.sum())} such rows; expected one of the {len(CLASSES)} known codes)"
        )
    # An empty designation is kept: like any text with no usable word, it is scored from the image.
    df = x.join(y)
    df["label"] = df["prdtypecode"].map(INDEX).astype("int16")
    df["image"] = paths.image_names(df)
    return df

"""Where product images are kept and read from: a folder, a folder inside a zip archive, or any fsspec URL.

`data/raw/images.zip` holds every image of the data (`image_train/` and `image_test/` at its root; the sample and
a repacked download store them uncompressed, as JPEGs do not deflate) and is read in place, so DVC hashes and checks one file where it had one
per image (93,416 at the real size). A store is named by a folder path or an fsspec URL:
`zip://image_test::/abs/data/raw/images.zip` (`paths.images_url`), `s3://bucket/images`. Opening a store on an
archive reads the archive's whole directory (1.7 s at the real size's 197,456 entries, measured; fsspec makes a
new instance for each chained URL it is given), so a process opens one store and reads every chunk through it.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable
from pathlib import Path

from product_classifier.errors import DataError

# Every entry gets this timestamp, so the same images always make the same archive (and the same DVC hash).
FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def is_url(location: str | os.PathLike) -> bool:
    return "://" in str(location)


class ImageStore:
    """Image files by name (`image_{imageid}_product_{productid}.jpg`) under one location."""

    def __init__(self, location: str | os.PathLike):
        self.location = str(location)
        self.fs = None
        root = self.location
        if is_url(self.location):
            import fsspec

            try:
                self.fs, root = fsspec.core.url_to_fs(self.location)
            except FileNotFoundError:
                raise DataError(f"{self.location}: not found") from None
            except zipfile.BadZipFile:
                raise DataError(f"{self.location}: not a valid zip archive") from None
        self.root = root.rstrip("/")

    def check(self) -> None:
        """Fail in one line if the location holds no image folder (a local folder or archive; a remote one is
        not listed: the workers that read it may see what this process cannot)."""
        if self.fs is None and not Path(self.root).is_dir():
            raise DataError(f"{self.location}: image folder not found")
        if self.fs is not None and self.fs.protocol == "zip" and not self.fs.isdir(self.root):
            raise DataError(f"{self.location}: no folder {self.root}/ in the archive")

    def read_many(self, names: list[str]) -> dict[str, bytes | None]:
        """The files' bytes by name, in one call (s3fs fetches them concurrently); None for one that is missing or
        cannot be read (its product is then scored from its text)."""
        if self.fs is None:
            return {name: _read_file(Path(self.root, name)) for name in names}
        found = self.fs.cat([f"{self.root}/{name}" for name in names], on_error="return") if names else {}
        out = {}
        for name in names:
            data = found.get(f"{self.root}/{name}")
            if isinstance(data, (OSError, zipfile.BadZipFile)):  # missing, a folder, no permission, a damaged entry
                data = None
            elif isinstance(data, BaseException):
                raise data
            out[name] = data
        return out

    def read(self, name: str) -> bytes | None:
        return self.read_many([name])[name]


def _read_file(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:  # missing, a folder, no permission
        return None


def write_archive(path: Path, members: Iterable[tuple[str, bytes]]) -> int:
    """Write `(name, bytes)` entries, in order, as an uncompressed zip with fixed timestamps; the entry count."""
    count = 0
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members:
            info = zipfile.ZipInfo(name, FIXED_TIME)
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
            count += 1
    return count

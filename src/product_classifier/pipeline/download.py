"""Fetch the real Rakuten files over HTTP: retries, resume, progress bars, atomic renames.

Each file is checked against the size the server announces (`Content-Length`, `Content-Range`)
and, where `data.sha256` pins one, its sha256. A partial `.part` file resumes with a Range
request guarded by `If-Range` (the ETag, else Last-Modified, saved beside it), so a file that
changed on the server restarts from zero instead of being spliced. The image archive is repacked
as data/raw keeps it (`images.zip`, `image_{train,test}/` at its root, read in place) whether it holds those
folders at its root (the original project's `images_low.zip`) or under `images/`; macOS junk (`__MACOSX/`,
`._*`) is skipped.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
import zipfile
from pathlib import Path, PurePosixPath

import requests
from requests.adapters import HTTPAdapter
from tqdm import tqdm
from urllib3.util.retry import Retry

from product_classifier import paths
from product_classifier.errors import DataError, DownloadError
from product_classifier.inference.imagestore import write_archive

CHUNK = 1 << 16  # small enough that a cut transfer keeps nearly all it received


def session(retries: int = 3, backoff: float = 0.5) -> requests.Session:
    """A session that retries connection errors and 429/5xx with exponential backoff."""
    retry = Retry(
        total=retries,
        backoff_factor=backoff,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=frozenset({"GET", "HEAD"}),
        respect_retry_after_header=True,
    )
    s = requests.Session()
    s.mount("http://", HTTPAdapter(max_retries=retry))
    s.mount("https://", HTTPAdapter(max_retries=retry))
    return s


class _Interrupted(Exception):
    """The transfer stopped part-way; what arrived is kept in the .part file."""


def fetch(url: str, dest: Path, *, http: requests.Session | None = None, sha256: str | None = None,
          timeout: float = 30.0, attempts: int = 3) -> Path:
    """Download `url` to `dest`, resuming a previous partial download (`dest.part`).

    The file appears at `dest` only once complete and, if `sha256` is given, verified.
    HTTP errors and refused connections are retried by the session; a transfer cut
    part-way is resumed with a Range request, up to `attempts` times.
    """
    http = http or session()
    if dest.exists():
        _verify(dest, sha256)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(1, attempts + 1):
        try:
            _fetch_once(http, url, part, timeout)
            break
        except _Interrupted as exc:
            if attempt == attempts:
                raise DownloadError(f"{url}: {exc}; run again to resume") from None
    _verify(part, sha256, dest.name)
    os.replace(part, dest)
    _validator_file(part).unlink(missing_ok=True)
    return dest


def _validator_file(part: Path) -> Path:
    """Where the ETag (or Last-Modified) of the version a `.part` file holds is kept."""
    return part.with_name(part.name + ".etag")


def _validator(resp: requests.Response) -> str | None:
    etag = resp.headers.get("ETag")
    return etag if etag and not etag.startswith("W/") else resp.headers.get("Last-Modified")


def _restart(part: Path) -> None:
    part.unlink(missing_ok=True)
    _validator_file(part).unlink(missing_ok=True)


_CONTENT_RANGE = re.compile(r"bytes (?:\d+-\d+|\*)/(\d+)")


def _total_size(resp: requests.Response) -> int | None:
    """The whole file's size from `Content-Range` (206, 416), if the server says it."""
    match = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", "").strip())
    return int(match[1]) if match else None


def _fetch_once(http: requests.Session, url: str, part: Path, timeout: float) -> None:
    have = part.stat().st_size if part.exists() else 0
    validator = _validator_file(part).read_text() if have and _validator_file(part).exists() else None
    headers = {"Range": f"bytes={have}-"} if have else {}
    if validator:
        headers["If-Range"] = validator
    try:
        with http.get(url, headers=headers, stream=True, timeout=timeout) as resp:
            if resp.status_code == 416:  # nothing left past `have`: complete only if the sizes agree
                if _total_size(resp) == have:
                    return
                _restart(part)
                raise _Interrupted(f"the server has {_total_size(resp)} bytes, the partial file {have}: restarting")
            if resp.status_code == 404:
                raise DownloadError(f"{url}: not found (404); check data.url, data.files and data.image_archive in params.yaml")
            resp.raise_for_status()
            if have and resp.status_code != 206:  # Range ignored, or the file changed (If-Range): start over
                have = 0
            expected = _expected_size(resp, have)
            if (val := _validator(resp)) is not None:
                _validator_file(part).write_text(val)
            with open(part, "ab" if have else "wb") as fh, tqdm(
                total=expected, initial=have, unit="B", unit_scale=True, desc=part.name[:-5],
                disable=None, file=sys.stderr,
            ) as bar:
                for chunk in resp.iter_content(CHUNK):
                    fh.write(chunk)
                    bar.update(len(chunk))
    except requests.HTTPError as exc:
        raise DownloadError(f"{url}: HTTP {exc.response.status_code}") from None
    except requests.RequestException as exc:
        got = part.stat().st_size if part.exists() else 0
        if got > have:
            raise _Interrupted(f"interrupted after {got} bytes ({type(exc).__name__})") from None
        raise DownloadError(
            f"cannot reach {url} ({type(exc).__name__}); check the network, or set data.source: sample"
        ) from None
    got = part.stat().st_size
    if expected is not None and got < expected:
        raise _Interrupted(f"got {got} of {expected} bytes")
    if expected is not None and got > expected:  # more than announced: not the file we think it is
        _restart(part)
        raise _Interrupted(f"got {got} bytes where the server announced {expected}: restarting")


def _expected_size(resp: requests.Response, have: int) -> int | None:
    if resp.status_code == 206 and (total := _total_size(resp)) is not None:
        return total
    length = resp.headers.get("Content-Length")
    if resp.headers.get("Content-Encoding") not in (None, "identity"):  # the length of the encoded body
        return None
    return have + int(length) if length is not None and length.isdigit() else None


def _verify(path: Path, sha256: str | None, name: str | None = None) -> None:
    if not sha256:
        return
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    if digest.hexdigest() != sha256.lower():
        _restart(path)
        raise DownloadError(f"{name or path.name}: sha256 mismatch (expected {sha256}); the file was removed, run again")


def download_all(url: str, files: tuple[str, ...], image_archive: str, cache: Path, out: Path,
                 sha256: dict[str, str]) -> dict:
    """Fetch `files` and the image archive into the resumable `cache`, then lay them out in `out` as data/raw
    keeps them; returns how many images were archived and how many junk entries skipped."""
    http = session()
    for name in (*files, image_archive):
        fetch(url + name, cache / name, http=http, sha256=sha256.get(name))
    for name in files:
        shutil.copyfile(cache / name, out / name)
    return repack_images(cache / image_archive, out / paths.IMAGE_ARCHIVE)


IMAGE_FOLDERS = ("image_train", "image_test")


def normalized_member(name: str) -> str | None:
    """Where an archive entry goes in data/raw's archive (`image_train/...`, `image_test/...`), or None for
    folders, macOS junk and other files.

    Accepts `image_train/...` at the root (images_low.zip), `images/image_train/...` (images.zip)
    or any other prefix before the `image_train` / `image_test` folder."""
    parts = PurePosixPath(name).parts
    if not parts or name.endswith("/") or "__MACOSX" in parts or parts[-1].startswith("."):  # ._*, .DS_Store
        return None
    for i, part in enumerate(parts[:-1]):
        if part in IMAGE_FOLDERS:
            return str(PurePosixPath(*parts[i:]))
    return None


def _link_or_copy(src: Path, dest: Path) -> None:
    dest.unlink(missing_ok=True)
    try:
        os.link(src, dest)
    except OSError:  # another file system, or links not allowed
        shutil.copyfile(src, dest)


def repack_images(archive: Path, dest: Path) -> dict:
    """The source's archive as data/raw keeps it: the image folders at its root. An archive already laid out so
    (images_low.zip) is linked as it is, its macOS junk left in place: readers name the files they read, so
    `__MACOSX/` is never opened. Any other layout (`images/image_train/...`) is rewritten, uncompressed, with fixed
    timestamps (the same images give the same file) and without the junk. Every entry is read, so a corrupt one
    fails here."""
    counts = {"images": 0, "skipped": 0}
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            for member in members:
                name = PurePosixPath(member.filename)
                if name.is_absolute() or ".." in name.parts or "\\" in member.filename:
                    raise DataError(f"{archive.name}: unsafe path {member.filename!r} in archive")
            kept = [(target, member) for member in members if (target := normalized_member(member.filename))]
            counts["skipped"] = sum(not member.is_dir() for member in members) - len(kept)
            if not any(target.startswith("image_train/") for target, _ in kept):
                raise DataError(f"{archive.name} holds no image_train/ folder (expected at its root or under images/)")
            if all(target == member.filename for target, member in kept):
                # Already data/raw's layout: read every entry (CRC-checked) and link the file, not a second copy of
                # it written (at 27,000 products the copy made the stage grow faster than the data: exponent 1.27).
                if (bad := zf.testzip()) is not None:
                    raise zipfile.BadZipFile(f"bad CRC-32 for {bad}")
                _link_or_copy(archive, dest)
                counts["images"] = len(kept)
            else:
                counts["images"] = write_archive(dest, ((target, zf.read(member)) for target, member in kept))
    except zipfile.BadZipFile as exc:
        archive.unlink()
        raise DataError(f"{archive.name} is not a valid zip file ({exc}); it was removed, run again") from None
    return counts

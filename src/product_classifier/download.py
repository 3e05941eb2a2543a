"""Fetch the real Rakuten files over HTTP: retries, resume, progress bars, atomic renames."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import zipfile
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter
from tqdm import tqdm
from urllib3.util.retry import Retry

from . import paths
from .errors import DataError, DownloadError

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
    _verify(part, sha256)
    os.replace(part, dest)
    return dest


def _fetch_once(http: requests.Session, url: str, part: Path, timeout: float) -> None:
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        with http.get(url, headers=headers, stream=True, timeout=timeout) as resp:
            if resp.status_code == 416:  # the part file is already complete
                return
            if resp.status_code == 404:
                raise DownloadError(f"{url}: not found (404); check data.url and data.files in params.yaml")
            resp.raise_for_status()
            if have and resp.status_code != 206:  # server ignored Range: start over
                have = 0
            expected = _expected_size(resp, have)
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
    if expected is not None and got != expected:
        raise _Interrupted(f"got {got} of {expected} bytes")


def _expected_size(resp: requests.Response, have: int) -> int | None:
    length = resp.headers.get("Content-Length")
    return have + int(length) if length is not None and length.isdigit() else None


def _verify(path: Path, sha256: str | None) -> None:
    if not sha256:
        return
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    if digest.hexdigest() != sha256.lower():
        path.unlink()
        raise DownloadError(f"{path.name}: sha256 mismatch (expected {sha256}); the file was removed, run again")


def download_all(url: str, files: tuple[str, ...], cache: Path, out: Path, sha256: dict[str, str]) -> None:
    """Fetch `files` into the resumable `cache`, then lay them out in `out` as the real data is."""
    http = session()
    for name in files:
        fetch(url + name, cache / name, http=http, sha256=sha256.get(name))
    for name in files:
        src = cache / name
        if name.endswith(".zip"):
            _extract(src, out)
        else:
            shutil.copyfile(src, out / name)
    if not paths.image_dir(out).is_dir():
        raise DataError(f"{paths.IMAGES_ZIP} did not contain images/image_train/")


def _extract(archive: Path, out: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.infolist():
                target = (out / member.filename).resolve()
                if not target.is_relative_to(out.resolve()):
                    raise DataError(f"{archive.name}: unsafe path {member.filename!r} in archive")
            zf.extractall(out)
    except zipfile.BadZipFile:
        archive.unlink()
        raise DataError(f"{archive.name} is not a valid zip file; it was removed, run again") from None

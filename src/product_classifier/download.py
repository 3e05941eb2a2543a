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

CHUNK = 1 << 20


def session(retries: int = 5, backoff: float = 0.5) -> requests.Session:
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


def fetch(url: str, dest: Path, *, http: requests.Session | None = None, sha256: str | None = None,
          timeout: float = 30.0) -> Path:
    """Download `url` to `dest`, resuming a previous partial download (`dest.part`).

    The file appears at `dest` only once complete and, if `sha256` is given, verified.
    """
    http = http or session()
    if dest.exists():
        _verify(dest, sha256)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        with http.get(url, headers=headers, stream=True, timeout=timeout) as resp:
            if resp.status_code == 416:  # the part file is already complete
                resp.close()
            else:
                if resp.status_code == 404:
                    raise DownloadError(f"{url}: not found (404); check data.url and data.files in params.yaml")
                resp.raise_for_status()
                if have and resp.status_code != 206:  # server ignored Range: start over
                    have = 0
                expected = _expected_size(resp, have)
                with open(part, "ab" if have else "wb") as fh, tqdm(
                    total=expected, initial=have, unit="B", unit_scale=True, desc=dest.name,
                    disable=None, file=sys.stderr,
                ) as bar:
                    for chunk in resp.iter_content(CHUNK):
                        fh.write(chunk)
                        bar.update(len(chunk))
                if expected is not None and part.stat().st_size != expected:
                    raise DownloadError(
                        f"{url}: got {part.stat().st_size} of {expected} bytes; run again to resume"
                    )
    except requests.ConnectionError as exc:
        raise DownloadError(
            f"cannot reach {url} ({type(exc).__name__}); check the network, or set data.source: sample"
        ) from None
    except requests.Timeout:
        raise DownloadError(f"{url}: timed out; run again to resume") from None
    except requests.HTTPError as exc:
        raise DownloadError(f"{url}: HTTP {exc.response.status_code}") from None
    _verify(part, sha256)
    os.replace(part, dest)
    return dest


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

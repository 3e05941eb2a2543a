"""Installing VGG16's ImageNet weights once, on a machine without internet, where Keras looks for them.

    python -m product_classifier.pipeline.weights PATH_OR_URL    # `make weights FROM=PATH_OR_URL`

The file is checked against what Keras itself checks before loading it: the md5 that
`keras.applications.vgg16` publishes for it (`file_hash`), and its size. It is copied (or downloaded,
resumably, with a progress bar) beside its destination and renamed into place only once it matches.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
from pathlib import Path

from product_classifier.errors import UserError
from product_classifier.paths import IMAGENET_BYTES, IMAGENET_MD5, IMAGENET_NOTOP, IMAGENET_URL, imagenet_weights


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def install(source: str, dest: Path | None = None, *, md5: str = IMAGENET_MD5, size: int = IMAGENET_BYTES) -> Path:
    """Copy or download `source` (a path, or an http(s) URL) to `dest` (default: where Keras looks), checked.

    A file of the wrong size or md5 is refused with one line and nothing is installed; a download cut part-way
    resumes on the next call."""
    dest = Path(dest) if dest is not None else imagenet_weights()
    dest.parent.mkdir(parents=True, exist_ok=True)
    incoming = dest.with_name(f".{dest.name}.incoming")
    if source.startswith(("http://", "https://")):
        from product_classifier.pipeline.download import fetch

        fetch(source, incoming)
    else:
        if not Path(source).is_file():
            raise UserError(f"{source}: file not found (expected {IMAGENET_NOTOP}, {size:,} bytes)")
        shutil.copyfile(source, incoming)
    got_size, got_md5 = incoming.stat().st_size, _md5(incoming)
    if (got_size, got_md5) != (size, md5):
        incoming.unlink()
        raise UserError(f"{source}: not {IMAGENET_NOTOP}: {got_size:,} bytes, md5 {got_md5} "
                        f"(expected {size:,} bytes, md5 {md5}); nothing was installed")
    os.chmod(incoming, 0o644)
    os.replace(incoming, dest)
    return dest


def main(argv: list[str] | None = None) -> None:
    from product_classifier.errors import one_line_errors

    parser = argparse.ArgumentParser(description="Install VGG16's ImageNet weights where Keras looks for them.")
    parser.add_argument("source", help=f"path or http(s) URL of {IMAGENET_NOTOP} (published at {IMAGENET_URL})")
    args = parser.parse_args(argv)
    with one_line_errors():
        dest = install(args.source)
    print(f"installed {dest} (md5 {IMAGENET_MD5}); train.vgg16.weights: imagenet now uses it offline")


if __name__ == "__main__":
    main()

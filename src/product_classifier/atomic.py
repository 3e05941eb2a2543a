"""Write-then-rename helpers: an interrupted or failed stage never leaves a half-written output."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, *, is_dir: bool = False, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temporary sibling of `target`; rename it over `target` only on success (a file gets `mode`, a
    directory 0o755, not mkdtemp's 0o700: models/ is read by the serving container's own user, uid 10001)."""
    target = Path(target)
    created = [folder for folder in (target.parent, *target.parent.parents) if not folder.exists()]  # deepest first
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.tmp-"
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, dir=target.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        for folder in created:  # a failed write leaves no trace, not even an empty parent folder
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    os.chmod(tmp, 0o755 if is_dir else mode)
    if target.is_dir() and not target.is_symlink():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def write_json(path: str | os.PathLike, data: Any, mode: int = 0o644) -> None:
    with atomic_path(path, mode=mode) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())

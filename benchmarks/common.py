"""Helpers shared by the benchmarks (`python benchmarks/<name>.py` from the repo root).

Every benchmark prints what ran where (`header`), times with `median_runs` and reports
side by side with `print_table`. Benchmarks print figures; they never assert on time.
"""

from __future__ import annotations

import datetime
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gb() -> float | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return None


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, str]:
    """What the figures were measured on (no keras import: benchmarks pick their backend)."""
    ram = _ram_gb()
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    backend_package = {"tensorflow": "tensorflow-cpu"}.get(backend, backend)
    return {
        "cpu": f"{_cpu_model()} x {os.cpu_count()} cores",
        "ram": f"{ram:.1f} GiB" if ram else "unknown",
        "python": platform.python_version(),
        "keras": _version("keras"),
        "backend": f"{backend} {_version(backend_package)}",
        "os": f"{platform.system()} {platform.release()}",
    }


def header(title: str) -> None:
    """Print the benchmark's name, the machine and the date."""
    print(f"== {title} ==")
    print(f"date: {datetime.date.today().isoformat()}")
    for key, value in machine().items():
        print(f"{key}: {value}")
    print(flush=True)


def median_runs(fn: Callable[[], object], runs: int = 3, warmup: int = 0) -> float:
    """Median wall time of `runs` calls of `fn`, in seconds (after `warmup` untimed calls)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_rss_mb(children: bool = False) -> float:
    """Peak resident memory so far, in MiB, of this process (or of its waited-for children)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    scale = 1024**2 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return usage.ru_maxrss / scale


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def print_table(rows: Sequence[Sequence[object] | dict], columns: Sequence[str]) -> None:
    """A plain Markdown table (pastes into docs/performance.md as is); floats get 2 decimals."""
    cells = [[_cell(r.get(c, "") if isinstance(r, dict) else r[i]) for i, c in enumerate(columns)] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) + " |")
    print(flush=True)


def speedup(baseline_s: float, ours_s: float) -> str:
    """`baseline / ours` as `4.2x`."""
    return f"{baseline_s / ours_s:.1f}x" if ours_s > 0 else "inf"


def first_image(raw: Path, split: str = "test") -> bytes:
    """The first image of `split` in data/raw's archive (`raw` is data/raw): one real product photo to send."""
    import zipfile

    from product_classifier import paths

    with zipfile.ZipFile(raw / paths.IMAGE_ARCHIVE) as zf:
        name = next(n for n in sorted(zf.namelist()) if n.startswith(f"image_{split}/"))
        return zf.read(name)

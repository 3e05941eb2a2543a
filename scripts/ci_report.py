"""`make ci-report`: what this workspace changes against a base revision, as Markdown for a PR comment.

Writes <out>/report.md (metrics diff, params diff, where the plots are) and <out>/plots/ (the
`dvc plots diff` HTML, uploaded by CI as an artifact). Runs the same way locally and in CI.
"""

from __future__ import annotations

import argparse
import os
import subprocess
from pathlib import Path

MARKER = "<!-- dvc-report -->"  # lets CI find and update its own comment


def dvc(*args: str) -> str:
    result = subprocess.run(["dvc", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)}: {(result.stderr or result.stdout).strip()[:500]}")
    return result.stdout.strip()


def has_rev(rev: str) -> bool:
    return subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
                          capture_output=True).returncode == 0


def section(title: str, body: str, empty: str) -> str:
    return f"### {title}\n\n{body or empty}\n"


def report(base: str, out: Path, artifact_url: str | None) -> str:
    out.mkdir(parents=True, exist_ok=True)
    parts = [MARKER, "## DVC report", ""]
    if has_rev(base):
        parts.append(f"Workspace vs `{base}`.\n")
        parts.append(section("Metrics", dvc("metrics", "diff", base, "--md"), "No metric changed."))
        parts.append(section("Params", dvc("params", "diff", base, "--md"), "No param changed."))
        dvc("plots", "diff", base, "-o", str(out / "plots"))
    else:
        parts.append(f"`{base}` not found: current values only.\n")
        parts.append(section("Metrics", dvc("metrics", "show", "--md"), "No metrics."))
        dvc("plots", "show", "-o", str(out / "plots"))
    where = f"[plots artifact]({artifact_url})" if artifact_url else f"`{out / 'plots' / 'index.html'}`"
    parts.append(section("Plots", f"Training curves, confusion matrix and per-class F1: {where}.", ""))
    text = "\n".join(parts)
    (out / "report.md").write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="main")
    parser.add_argument("--out", type=Path, default=Path("report"))
    parser.add_argument("--artifact-url", default=os.environ.get("REPORT_ARTIFACT_URL") or None)
    args = parser.parse_args()
    print(report(args.base, args.out, args.artifact_url))


if __name__ == "__main__":
    main()

"""Gated promotion of a retrained model, by MLflow registered-model aliases `champion` and `challenger`.

    python -m product_classifier.tracking.promotion promote [--version N]   # `make promote`
    python -m product_classifier.tracking.promotion show                    # `make champion`

The evaluate stage registers each pipeline run as a model version tagged with its fused weighted F1 on
the test split (`fused.f1_weighted`), its git commit and the md5 of `data/processed` (the split).
`promote` (exit 1 when it refuses) compares a candidate (the newest version unless `--version`) with the version holding the
`champion` alias: it becomes champion only if its F1 is not lower than the champion's by more than
`promote.tolerance` (params.yaml) and both were evaluated on the same test split (same data md5).
Otherwise it holds `challenger` (serving can run it in shadow or canary: CHALLENGER_MODELS_DIR).
The decision and its reason are tagged on the version (`promotion.*`); in git, the merged `dvc.lock`
(the retrain pull request) records which model the repository serves. `show` prints the champion,
why it is champion, and whether this checkout's dvc.lock is that model.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from product_classifier.errors import DataError
from product_classifier.pipeline.params import load_params
from product_classifier.tracking import tags as tag
from product_classifier.tracking.client import client_environment
from product_classifier.tracking.provenance import data_hashes
from product_classifier.tracking.settings import experiment_name, redact, tracking_uri

CHAMPION, CHALLENGER = "champion", "challenger"
F1_TAG = "fused.f1_weighted"


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def decide(candidate_f1: float, champion_f1: float | None, tolerance: float, same_split: bool) -> Decision:
    """The gate: pure arithmetic on the two F1 scores."""
    if champion_f1 is None:
        return Decision(True, f"no champion yet; fused weighted F1 {candidate_f1:.4f}")
    if not same_split:
        return Decision(False, "evaluated on a different test split than the champion: the F1 scores do not compare")
    drop = champion_f1 - candidate_f1
    verdict = "within" if drop <= tolerance else "beyond"
    return Decision(drop <= tolerance, f"fused weighted F1 {candidate_f1:.4f} vs champion {champion_f1:.4f}: "
                                       f"drop {drop:+.4f} {verdict} tolerance {tolerance}")


class Registry:
    """The registered model's versions and aliases (an MlflowClient on MLFLOW_TRACKING_URI)."""

    def __init__(self, uri: str, name: str):
        from mlflow.tracking import MlflowClient

        self.client, self.name = MlflowClient(uri), name

    def version(self, number: str | None = None):
        if number is not None:
            return self.client.get_model_version(self.name, str(number))
        versions = self.client.search_model_versions(f"name='{self.name}'")
        if not versions:
            raise DataError(f"no version of registered model {self.name!r}: run the pipeline with MLflow tracking on")
        return max(versions, key=lambda v: int(v.version))

    def alias(self, alias: str):
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version_by_alias(self.name, alias)
        except MlflowException:
            return None


def f1_of(version) -> float:
    try:
        return float(version.tags[F1_TAG])
    except (KeyError, ValueError):
        raise DataError(f"model version {version.version} has no {F1_TAG} tag (not registered by the evaluate stage)") from None


def promote(registry: Registry, tolerance: float, number: str | None = None) -> Decision:
    candidate = registry.version(number)
    champion = registry.alias(CHAMPION)
    if champion is not None and str(champion.version) == str(candidate.version):
        return Decision(False, f"version {candidate.version} is already champion")
    decision = decide(f1_of(candidate), f1_of(champion) if champion else None, tolerance,
                      champion is None or candidate.tags.get(tag.SPLIT) == champion.tags.get(tag.SPLIT))
    client, name = registry.client, registry.name
    now = datetime.now(UTC).isoformat(timespec="seconds")
    tags = {"promotion.decision": "champion" if decision.promote else "challenger", "promotion.reason": decision.reason,
            "promotion.at": now, "promotion.tolerance": str(tolerance),
            "promotion.previous_champion": str(champion.version) if champion else ""}
    for key, value in tags.items():
        client.set_model_version_tag(name, candidate.version, key, value)
    if decision.promote:
        client.set_registered_model_alias(name, CHAMPION, candidate.version)
        challenger = registry.alias(CHALLENGER)
        if challenger is not None and str(challenger.version) == str(candidate.version):
            client.delete_registered_model_alias(name, CHALLENGER)
    else:
        client.set_registered_model_alias(name, CHALLENGER, candidate.version)
    return decision


def describe(registry: Registry, lock: Path = Path("dvc.lock")) -> str:
    lines = []
    for alias in (CHAMPION, CHALLENGER):
        version = registry.alias(alias)
        if version is None:
            lines.append(f"{alias}: none")
            continue
        tags = version.tags
        lines.append(f"{alias}: {registry.name} version {version.version} (git {tags.get(tag.GIT_COMMIT, '?')[:12]}, "
                     f"{F1_TAG} {tags.get(F1_TAG, '?')})")
        lines.append(f"  why: {tags.get('promotion.reason', 'no promotion recorded')}"
                     f" ({tags.get('promotion.at', 'no date')})")
        here = data_hashes(lock).get(tag.SPLIT)
        if alias == CHAMPION and here:
            same = "is" if here == tags.get(tag.SPLIT) else "is NOT"
            lines.append(f"  this checkout's dvc.lock {same} on the champion's data ({tag.SPLIT} {here[:12]})")
    return "\n".join(lines)


def run(args: argparse.Namespace, registry: Registry) -> Decision | None:
    if args.command == "show":
        print(describe(registry))
        return None
    tolerance = args.tolerance if args.tolerance is not None else load_params().promote.tolerance
    return promote(registry, tolerance, args.version)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("promote", help="promote the newest (or --version) model version if its F1 held")
    up.add_argument("--version", help="the registered model version to consider (default: the newest)")
    up.add_argument("--tolerance", type=float, help="override params.yaml's promote.tolerance")
    sub.add_parser("show", help="which version is champion (and challenger), and why")
    args = parser.parse_args(argv)
    uri = tracking_uri()
    if uri is None:
        sys.exit("promotion: MLflow tracking is off (MLFLOW_TRACKING_URI): there is no registry to promote in")
    try:
        with client_environment(uri):
            decision = run(args, Registry(uri, experiment_name()))
    except DataError as exc:
        sys.exit(f"promotion: {exc}")
    except Exception as exc:  # noqa: BLE001 - an unreachable or refusing registry: one line, not a traceback
        sys.exit(f"promotion: MLflow registry at {redact(uri)}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
    if decision is None:
        return
    if not decision.promote:
        sys.exit(f"not promoted (kept as challenger): {decision.reason}")  # exit 1: a gate that says no
    print(f"promoted to champion: {decision.reason}")


if __name__ == "__main__":
    main()

"""Stage `fuse`: fit the text/image combination on the validation split."""

from product_classifier import paths
from product_classifier.cli import stage


@stage
def main(p):
    from product_classifier import tracking
    from product_classifier.fuse import fit_and_save_fusion

    out = paths.MODELS / paths.FUSION
    summary = fit_and_save_fusion(paths.PROCESSED, paths.MODELS, out, p)
    tracking.log_stage("fuse", {"fuse": p.fuse.model_dump()}, artifacts=[out])
    return summary


if __name__ == "__main__":
    main()

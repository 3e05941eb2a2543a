"""Stage `fuse`: fit the text/image combination on the validation split."""

from product_classifier import paths
from product_classifier.cli import stage


@stage
def main(p):
    from product_classifier.training import fit_and_save_fusion

    return fit_and_save_fusion(paths.PROCESSED, paths.MODELS, paths.MODELS / "fusion", p)


if __name__ == "__main__":
    main()

"""Stage `evaluate`: the served predictor on the test split (quality, latency, throughput)."""

from product_classifier import paths
from product_classifier.cli import stage


@stage
def main(p):
    from product_classifier.evaluation import evaluate

    result = evaluate(paths.PROCESSED, paths.RAW, paths.MODELS, paths.METRICS / "evaluate", p)
    return {name: result[name]["f1_weighted"] for name in ("lstm", "vgg16", "fused")}


if __name__ == "__main__":
    main()

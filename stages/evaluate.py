"""Stage `evaluate`: the served predictor on the test split (quality, latency, throughput)."""

from product_classifier import paths
from product_classifier.cli import stage


@stage
def main(p):
    from product_classifier import live, tracking
    from product_classifier.evaluation import evaluate

    metrics = paths.EVALUATION
    result = evaluate(paths.PROCESSED, paths.RAW, paths.MODELS, p)
    with live.recorder(metrics) as rec:
        live.record_evaluation(rec, result)
    tracking.log_stage("evaluate", {"evaluate": p.evaluate.model_dump(), "fuse": p.fuse.model_dump()}, metrics,
                       model=paths.MODELS)
    return {name: result.summary[name]["f1_weighted"] for name in ("fused", paths.LSTM, paths.VGG16)}


if __name__ == "__main__":
    main()

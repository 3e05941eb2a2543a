"""Stage `evaluate`: the served predictor on the test split (quality, latency, throughput)."""

from product_classifier import paths
from product_classifier.pipeline.stage import stage


@stage
def main(p):
    from product_classifier.pipeline.evaluation import evaluate
    from product_classifier.tracking import client, live
    from product_classifier.tracking.provenance import declared_params

    metrics = paths.EVALUATION
    result = evaluate(paths.PROCESSED, paths.RAW, paths.MODELS, p)
    with live.recorder(metrics) as rec:
        live.record_evaluation(rec, result)
    client.log_stage("evaluate", declared_params("evaluate"), metrics,
                       model=paths.MODELS)
    return {name: result.summary[name]["f1_weighted"] for name in ("fused", paths.LSTM, paths.VGG16)}


if __name__ == "__main__":
    main()

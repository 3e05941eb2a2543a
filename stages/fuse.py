"""Stage `fuse`: fit the text/image combination on the validation split (and gate the optional INT8 image model)."""

from product_classifier import paths
from product_classifier.pipeline.stage import stage

METRICS = ("val_f1_weighted", "val_accuracy", "int8")


@stage
def main(p):
    from product_classifier.pipeline.fit_fusion import fit_and_save_fusion
    from product_classifier.tracking import client, live
    from product_classifier.tracking.provenance import declared_params

    out, metrics = paths.MODELS / paths.FUSION, paths.METRICS / "fuse"
    summary = fit_and_save_fusion(paths.PROCESSED, paths.MODELS, p)
    with live.recorder(metrics) as rec:
        rec.summary.update({k: summary[k] for k in METRICS if k in summary})
    client.log_stage("fuse", declared_params("fuse"), metrics, artifacts=[out, paths.MODELS / paths.BUNDLE_FILE])
    return summary


if __name__ == "__main__":
    main()

"""Stage `fuse`: fit the text/image combination on the validation split (and gate the optional INT8 image model)."""

from product_classifier import paths
from product_classifier.cli import stage

METRICS = ("val_f1_weighted", "val_accuracy", "int8")


@stage
def main(p):
    from product_classifier import live, tracking
    from product_classifier.fuse import fit_and_save_fusion

    out, metrics = paths.MODELS / paths.FUSION, paths.METRICS / "fuse"
    summary = fit_and_save_fusion(paths.PROCESSED, paths.MODELS, out, p)
    with live.recorder(metrics) as rec:
        rec.summary.update({k: summary[k] for k in METRICS if k in summary})
    tracking.log_stage("fuse", {"fuse": p.fuse.model_dump(), "quantize": p.quantize.model_dump()}, metrics,
                       artifacts=[out])
    return summary


if __name__ == "__main__":
    main()

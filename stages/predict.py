"""Stage `predict`: score the unlabeled X_test_update.csv and its images into data/predictions/, with the
local engine or on Ray (`predict.engine`; RAY_ADDRESS names the cluster)."""

from product_classifier import paths
from product_classifier.pipeline.stage import stage


@stage
def main(p):
    from product_classifier.scoring.score import score

    return score(p.predict.engine, paths.MODELS, paths.RAW / paths.X_TEST, paths.images_url(paths.RAW, "test"),
                 paths.PREDICTIONS / paths.PREDICTIONS_FILE, chunk_size=p.predict.chunk_size,
                 actors=p.predict.actors, batch_size=p.predict.batch_size)


if __name__ == "__main__":
    main()

"""Stage `predict`: score the unlabeled X_test_update.csv and its images into data/predictions/."""

from product_classifier import paths
from product_classifier.cli import stage


@stage
def main(p):
    from product_classifier.batch import score_csv
    from product_classifier.predictor import Predictor

    return score_csv(Predictor.load(paths.MODELS), paths.RAW / paths.X_TEST, paths.image_dir(paths.RAW, "test"),
                     paths.PREDICTIONS / paths.PREDICTIONS_FILE, p.predict.chunk_size)


if __name__ == "__main__":
    main()

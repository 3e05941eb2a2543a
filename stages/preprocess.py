"""Stage `preprocess`: clean and tokenize text, decode and resize images, split the rows."""

from product_classifier import paths
from product_classifier.pipeline.stage import stage


@stage
def main(p):
    from product_classifier.pipeline.preprocess import run

    return run(paths.RAW, paths.PROCESSED, p.preprocess)


if __name__ == "__main__":
    main()

"""Stage `train_lstm`: the text model (Embedding + LSTM)."""

from product_classifier import paths
from product_classifier.cli import stage


@stage
def main(p):
    from product_classifier.training import train_lstm

    return train_lstm(paths.PROCESSED, paths.MODELS / "lstm", paths.METRICS / "train_lstm", p)


if __name__ == "__main__":
    main()

"""Stage `train_lstm`: the text model (Embedding + LSTM), its curves in dvclive, its run in MLflow."""

from product_classifier import paths
from product_classifier.cli import stage


@stage
def main(p):
    from product_classifier.live import tracked_training
    from product_classifier.training import train_lstm

    return tracked_training("train_lstm", train_lstm, paths.MODELS / paths.LSTM, p, paths.LSTM, paths.VOCAB_FILE)


if __name__ == "__main__":
    main()

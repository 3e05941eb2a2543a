"""Stage `train_lstm`: the text model (Embedding + LSTM), its curves in dvclive, its run in MLflow."""

from product_classifier import paths
from product_classifier.pipeline.stage import stage


@stage
def main(p):
    from product_classifier.pipeline.backend import use_backend

    backend = use_backend(p.train.backend)  # before Keras is imported: only the training stages run Keras
    from product_classifier.pipeline.training import train_lstm
    from product_classifier.tracking.live import tracked_training

    summary = tracked_training("train_lstm", train_lstm, paths.MODELS / paths.LSTM, p, paths.LSTM, paths.VOCAB_FILE)
    return {**summary, "keras_backend": backend}


if __name__ == "__main__":
    main()

"""Stage `train_vgg16`: the image model (frozen VGG16 base, its features cached, dense head)."""

from product_classifier import paths
from product_classifier.pipeline.stage import stage


@stage
def main(p):
    from product_classifier.pipeline.backend import use_backend

    backend = use_backend(p.train.backend)  # before Keras is imported: only the training stages run Keras
    from product_classifier.pipeline.training import train_vgg16
    from product_classifier.tracking.live import tracked_training

    summary = tracked_training("train_vgg16", train_vgg16, paths.MODELS / paths.VGG16, p, paths.VGG16, paths.META_FILE)
    return {**summary, "keras_backend": backend}


if __name__ == "__main__":
    main()

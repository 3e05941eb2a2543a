"""Stage `train_vgg16`: the image model (frozen VGG16 base, its features cached, dense head)."""

from product_classifier import paths
from product_classifier.cli import stage


@stage
def main(p):
    from product_classifier.live import tracked_training
    from product_classifier.training import train_vgg16

    return tracked_training("train_vgg16", train_vgg16, paths.MODELS / paths.VGG16, p, paths.VGG16, paths.META_FILE)


if __name__ == "__main__":
    main()

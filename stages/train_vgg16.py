"""Stage `train_vgg16`: the image model (frozen VGG16 base, its features cached, dense head)."""

from product_classifier import paths
from product_classifier.cli import stage


@stage
def main(p):
    from product_classifier.training import train_vgg16

    return train_vgg16(paths.PROCESSED, paths.MODELS / "vgg16", paths.METRICS / "train_vgg16", p)


if __name__ == "__main__":
    main()

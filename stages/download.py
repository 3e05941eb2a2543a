"""Stage `download`: data/raw in the real Rakuten layout, from the embedded sample or the real source."""

from product_classifier import paths
from product_classifier.atomic import atomic_path
from product_classifier.pipeline.stage import stage


@stage
def main(p):
    summary = {"source": p.data.source}
    with atomic_path(paths.RAW, is_dir=True) as tmp:
        if p.data.source == "sample":
            from product_classifier.pipeline.sample import generate

            generate(tmp, p.data.sample_size, p.data.seed)
        else:
            from product_classifier.pipeline.download import download_all

            summary |= download_all(p.data.url, p.data.files, p.data.image_archive, paths.DOWNLOAD_CACHE, tmp,
                                    p.data.sha256)
    return summary


if __name__ == "__main__":
    main()

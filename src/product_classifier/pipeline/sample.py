"""The embedded sample: a deterministic stand-in for the Rakuten data, in its real layout.

It keeps the real class codes and proportions, messy multilingual text (HTML tags and
entities, mojibake, ligatures, empty descriptions) and 500x500 JPEGs with white padding. Some
classes look alike and only their text tells them apart, others share their words and
only their image does, so neither model alone can be right everywhere and fusion pays.

It also holds, in every sample however small, the rows the real catalogue has and the code
must survive (`TEXT_QUIRKS`, `IMAGE_QUIRKS`): titles in Cyrillic, Greek or Chinese, titles
with no usable word, whitespace-only and very long descriptions; blank, truncated, CMYK,
greyscale, progressive and EXIF-rotated JPEGs. Which rows get a quirk is drawn from the seed.
"""

from __future__ import annotations

import io
import itertools
import math
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw
from PIL.ExifTags import Base as ExifTag

from product_classifier import paths
from product_classifier.inference.imagestore import write_archive
from product_classifier.inference.labels import CLASSES, REAL_COUNTS

IMAGE_SIDE = 500
IMAGE_CHUNK = 256  # images a worker encodes per task: its results (about 6 MB) wait in order to be archived

# Own words of each class (French first, a little English and German as in the catalogue).
KEYWORDS: dict[int, list[str]] = {
    10: ["livre", "occasion", "roman", "poche", "auteur", "lecture", "épuisé", "used", "œuvres"],
    2403: ["bd", "manga", "tome", "comics", "album", "intégrale", "bande", "dessinée"],
    2705: ["livre", "neuf", "nouveauté", "parution", "broché", "éditeur", "préface", "buch"],
    2280: ["journal", "revue", "numéro", "hebdomadaire", "presse", "quotidien", "1968", "magazine"],
    40: ["jeu", "vidéo", "rétro", "cartouche", "nintendo", "sega", "pal", "game"],
    2462: ["occasion", "lot", "jeux", "console", "playstation", "xbox", "testé", "used"],
    2905: ["jeu", "pc", "windows", "dvd", "rom", "steam", "téléchargement", "download"],
    50: ["manette", "chargeur", "câble", "casque", "accessoire", "gaming", "usb", "controller"],
    60: ["console", "portable", "pack", "hdmi", "go", "édition", "limitée", "konsole"],
    1160: ["carte", "pokémon", "booster", "rare", "holo", "magic", "yu", "gi"],
    1300: ["maquette", "modélisme", "drone", "hélicoptère", "échelle", "kit", "moteur", "rc"],
    1301: ["chaussettes", "bébé", "layette", "babyfoot", "fléchettes", "billard", "naissance", "socks"],
    1320: ["poussette", "siège", "auto", "biberon", "langer", "porte", "bébé", "stroller"],
    1920: ["coussin", "housse", "drap", "couette", "taie", "linge", "oreiller", "kissen", "cœur"],
    1940: ["épicerie", "thé", "café", "bonbon", "chocolat", "sucre", "bio", "coffee", "œufs"],
    2220: ["chien", "chat", "collier", "croquettes", "laisse", "litière", "animaux", "hund"],
    2522: ["cahier", "stylo", "papeterie", "agenda", "carnet", "feutre", "classeur", "notebook"],
    2583: ["piscine", "pompe", "filtre", "spa", "bâche", "liner", "chlore", "pool"],
    2585: ["outil", "perceuse", "aspirateur", "nettoyage", "bricolage", "visseuse", "tool", "werkzeug", "schließe"],
}
# Classes whose text is drawn from one shared pool: only the image separates them.
SHARED_WORDS: dict[tuple[int, ...], list[str]] = {
    (1280, 1281, 1302): ["jouet", "enfant", "cadeau", "jeu", "ans", "fun", "spielzeug", "toy"],
    (1560, 2060, 2582): ["maison", "design", "moderne", "bois", "décoration", "intérieur", "home", "style"],
    (1140, 1180): ["figurine", "collection", "personnage", "statuette", "série", "figure", "pop", "officielle"],
}
# Classes that share one look: only the text separates them.
SHARED_LOOK: list[tuple[int, ...]] = [(10, 2403, 2705, 2280), (40, 2462, 2905), (1920, 1940)]

FILLER = [
    "de", "la", "le", "pour", "avec", "et", "en", "lot", "neuf", "qualité", "prix", "taille",
    "couleur", "nouveau", "original", "livraison", "gratuite", "idéal", "cm", "noir", "blanc",
    "new", "size", "free", "shipping", "neu", "farbe", "größe", "très", "bon", "état", "l'article",
    "ex-æquo", "straße",
]
# Titles in other scripts: a class's own words where we have them, else words any product may carry.
FOREIGN: dict[str, tuple[dict[int, str], str]] = {
    "cyrillic": ({2583: "Бассейн насос фильтр", 1320: "Детская коляска", 1280: "Набор игрушек",
                  2220: "Ошейник для собаки", 1160: "Карты покемон"}, "Новинка подарок"),
    "greek": ({2583: "Πισίνα αντλία", 1280: "Παιχνίδι για παιδιά", 1940: "Τσάι καφές"}, "Νέο δώρο"),
    "cjk": ({2583: "游泳池 水泵", 1280: "儿童玩具", 1940: "茶 咖啡", 2403: "漫画 第一卷"}, "新品 礼物"),
}
NO_WORD_TITLES = ["🎁🎉🔥", "!!! ???", "★★★★★", "- / -", "😀 👍"]
# Share of rows with each quirk (at least MIN_QUIRK rows each, whatever the sample size).
TEXT_QUIRKS = {"cyrillic": 0.01, "greek": 0.005, "cjk": 0.005, "no_word": 0.008,
               "whitespace_description": 0.02, "long_description": 0.01}
IMAGE_QUIRKS = {"blank": 0.006, "truncated": 0.003, "cmyk": 0.01, "grey": 0.01, "progressive": 0.02,
                "exif_rotated": 0.01}
MIN_QUIRK = 2
PALETTE = [
    (220, 40, 40), (40, 160, 60), (40, 80, 210), (240, 200, 30), (150, 60, 180), (30, 190, 200),
    (250, 130, 20), (120, 80, 40), (30, 30, 30), (200, 90, 160), (120, 190, 40), (90, 110, 130),
]
SHAPES = ["disc", "square", "triangle", "stripes", "ring", "cross", "diamond", "checker"]


def _looks() -> dict[int, tuple[tuple[int, int, int], str]]:
    """One (colour, shape) per class; classes of a SHARED_LOOK group get the same one."""
    owners: list[tuple[int, ...]] = list(SHARED_LOOK)
    grouped = {c for g in SHARED_LOOK for c in g}
    owners += [(c,) for c in CLASSES if c not in grouped]
    looks = {}
    for i, group in enumerate(owners):
        look = (PALETTE[i % len(PALETTE)], SHAPES[(i * 5 + i // len(PALETTE)) % len(SHAPES)])
        for c in group:
            looks[c] = look
    return looks


LOOKS = _looks()
WORDS: dict[int, list[str]] = dict(KEYWORDS)
for _group, _words in SHARED_WORDS.items():
    for _c in _group:
        WORDS[_c] = _words


def class_counts(n: int, minimum: int = 10) -> dict[int, int]:
    total = sum(REAL_COUNTS.values())
    return {c: max(minimum, round(REAL_COUNTS[c] * n / total)) for c in CLASSES}


def _html_escape_some(text: str, rng: np.random.Generator) -> str:
    if rng.random() < 0.5:
        text = text.replace("é", "&eacute;").replace("è", "&egrave;").replace("à", "&agrave;")
    return text.replace("'", "&#39;") if rng.random() < 0.5 else text


def _words(code: int, rng: np.random.Generator, n_own: int, n_fill: int) -> list[str]:
    own = list(rng.choice(WORDS[code], size=n_own))
    fill = list(rng.choice(FILLER, size=n_fill))
    words = own + fill
    rng.shuffle(words)
    return [str(w) for w in words]


def make_text(code: int, rng: np.random.Generator, quirk: str = "") -> tuple[str, str]:
    """(designation, description) for one product of class `code`."""
    if rng.random() < 0.06:  # uninformative listing: only filler words
        designation = " ".join(str(w) for w in rng.choice(FILLER, size=5))
    else:
        designation = " ".join(_words(code, rng, int(rng.integers(2, 4)), int(rng.integers(2, 5))))
        if rng.random() < 0.5:
            designation = designation.capitalize() + f" - Réf {int(rng.integers(100, 99999))}"
    description = ""
    if rng.random() >= 0.35:  # about 35% of real descriptions are empty
        sentences = [" ".join(_words(code, rng, 1, int(rng.integers(4, 9)))) for _ in range(int(rng.integers(1, 4)))]
        description = "<p>" + "<br />".join(s.capitalize() + "." for s in sentences) + "</p>"
        description = _html_escape_some(description, rng)
    if rng.random() < 0.08:  # UTF-8 read as latin-1, as in the real CSVs
        designation = designation.encode("utf-8").decode("latin-1")
    if quirk in FOREIGN:
        own, generic = FOREIGN[quirk]
        designation = own.get(code, generic)
    elif quirk == "no_word":
        designation, description = str(rng.choice(NO_WORD_TITLES)), str(rng.choice(["", " ", "<p></p>"]))
    elif quirk == "whitespace_description":
        description = str(rng.choice([" ", "   ", "\t", " \n "]))
    elif quirk == "long_description":  # the longest real descriptions run to about 12,000 characters
        sentences = [" ".join(_words(code, rng, 1, 12)).capitalize() + "." for _ in range(int(rng.integers(60, 120)))]
        description = "<p>" + "<br />".join(sentences) + "</p>"
    return designation, description


def make_image(code: int, rng: np.random.Generator) -> Image.Image:
    """A 500x500 product photo: the class's shape and colour on a padded white canvas."""
    (r, g, b), shape = LOOKS[code]
    img = Image.new("RGB", (IMAGE_SIDE, IMAGE_SIDE), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    side = int(rng.integers(200, 420))
    x0 = int(rng.integers(10, IMAGE_SIDE - side - 10))
    y0 = int(rng.integers(10, IMAGE_SIDE - side - 10))
    x1, y1 = x0 + side, y0 + side
    jitter = rng.integers(-25, 26, size=3)
    colour = tuple(int(v) for v in np.clip(np.array([r, g, b]) + jitter, 0, 255))
    tint = tuple(int(v) for v in rng.integers(200, 256, size=3))
    draw.rectangle([x0, y0, x1, y1], fill=tint)
    m = side // 8
    if shape == "disc":
        draw.ellipse([x0 + m, y0 + m, x1 - m, y1 - m], fill=colour)
    elif shape == "square":
        draw.rectangle([x0 + 2 * m, y0 + 2 * m, x1 - 2 * m, y1 - 2 * m], fill=colour)
    elif shape == "triangle":
        draw.polygon([(x0 + side // 2, y0 + m), (x0 + m, y1 - m), (x1 - m, y1 - m)], fill=colour)
    elif shape == "stripes":
        for k in range(0, side, 2 * m):
            draw.rectangle([x0, y0 + k, x1, y0 + k + m], fill=colour)
    elif shape == "ring":
        draw.ellipse([x0 + m, y0 + m, x1 - m, y1 - m], outline=colour, width=m)
    elif shape == "cross":
        draw.rectangle([x0 + 3 * m, y0 + m, x1 - 3 * m, y1 - m], fill=colour)
        draw.rectangle([x0 + m, y0 + 3 * m, x1 - m, y1 - 3 * m], fill=colour)
    elif shape == "diamond":
        cx, cy = x0 + side // 2, y0 + side // 2
        draw.polygon([(cx, y0 + m), (x1 - m, cy), (cx, y1 - m), (x0 + m, cy)], fill=colour)
    else:  # checker
        for i in range(4):
            for j in range(4):
                if (i + j) % 2 == 0:
                    draw.rectangle([x0 + i * side // 4, y0 + j * side // 4, x0 + (i + 1) * side // 4, y0 + (j + 1) * side // 4], fill=colour)
    # Sensor noise, so no two photos are alike.
    noise = rng.normal(0, 6, size=(IMAGE_SIDE, IMAGE_SIDE, 1))
    arr = np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def encode_image(img: Image.Image, quirk: str, rng: np.random.Generator) -> bytes:
    """One photo's file as the catalogue has it: mostly baseline RGB JPEG, sometimes one of IMAGE_QUIRKS."""
    exif = None
    if quirk == "blank":
        img = Image.new("RGB", img.size, (255, 255, 255) if rng.random() < 0.5 else (238, 238, 238))
    elif quirk == "cmyk":
        img = img.convert("CMYK")
    elif quirk == "grey":
        img = img.convert("L")
    elif quirk == "exif_rotated":  # stored sideways, with the EXIF tag that turns it upright
        img, exif = img.transpose(Image.Transpose.ROTATE_90), Image.Exif()
        exif[ExifTag.Orientation] = 6
    options = {"quality": 85, "progressive": quirk == "progressive"}
    if exif is not None:
        options["exif"] = exif.tobytes()
    out = io.BytesIO()
    img.save(out, format="JPEG", **options)
    data = out.getvalue()
    if quirk == "truncated":  # a transfer cut short: the first part of the file only
        data = data[: len(data) * 2 // 5]
    return data


def _encode_images(jobs: Sequence[tuple[int, int, int, str]]) -> list[bytes]:
    out = []
    for seed, index, code, quirk in jobs:
        rng = np.random.default_rng([seed, index, 1])
        out.append(encode_image(make_image(code, rng), quirk, rng))
    return out


def assign_quirks(n: int, shares: dict[str, float], rng: np.random.Generator) -> list[str]:
    """One quirk name ('' for none) per row: each quirk on `share` of the rows (at least MIN_QUIRK)."""
    out = [""] * n
    order = rng.permutation(n)
    start = 0
    for name, share in shares.items():
        k = max(MIN_QUIRK, round(share * n))
        for row in order[start : start + k]:
            out[row] = name
        start += k
    return out


def _table(codes: Sequence[int], seed: int, offset: int, quirks: Sequence[str]) -> pd.DataFrame:
    rows = []
    for i, (code, quirk) in enumerate(zip(codes, quirks, strict=True)):
        rng = np.random.default_rng([seed, offset + i, 0])
        designation, description = make_text(code, rng, quirk)
        rows.append({
            "designation": designation,
            "description": description,
            "productid": int(rng.integers(10**8, 5 * 10**9)),
            "imageid": int(rng.integers(10**8, 2 * 10**9)),
        })
    return pd.DataFrame(rows, index=pd.RangeIndex(offset, offset + len(codes)))


def generate(out: Path, n: int, seed: int, workers: int = 0, n_test: int | None = None) -> None:
    """Write the sample's CSVs and image archive under `out` in data/raw's layout: `n` labelled products and
    `n_test` unlabelled ones (default a tenth; the real data has 13,812 for 84,916)."""
    rng = np.random.default_rng(seed)
    codes = np.repeat(list(class_counts(n)), list(class_counts(n).values()))
    rng.shuffle(codes)
    n_test = max(10, len(codes) // 10) if n_test is None else n_test
    test_codes = rng.choice(codes, size=n_test)
    quirk_rng = np.random.default_rng([seed, 2])
    splits = []
    for split, split_codes, offset in (("train", codes, 0), ("test", test_codes, len(codes))):
        text_quirks = assign_quirks(len(split_codes), TEXT_QUIRKS, quirk_rng)
        image_quirks = assign_quirks(len(split_codes), IMAGE_QUIRKS, quirk_rng)
        splits.append((split, _table(split_codes, seed, offset, text_quirks), split_codes, image_quirks))
    (_, train, _, _), (_, test, _, _) = splits
    train.to_csv(out / paths.X_TRAIN)
    pd.DataFrame({"prdtypecode": codes}, index=train.index).to_csv(out / paths.Y_TRAIN)
    test.to_csv(out / paths.X_TEST)

    jobs, members = [], []
    for split, table, split_codes, image_quirks in splits:
        for index, row, code, quirk in zip(table.index, table.itertuples(), split_codes, image_quirks, strict=True):
            jobs.append((seed, int(index), int(code), quirk))
            members.append(paths.image_member(split, row.imageid, row.productid))
    workers = workers or os.cpu_count() or 1
    chunk = max(1, min(IMAGE_CHUNK, math.ceil(len(jobs) / (workers * 4))))
    chunks = [jobs[i : i + chunk] for i in range(0, len(jobs), chunk)]
    with ProcessPoolExecutor(workers) as pool:
        encoded = itertools.chain.from_iterable(pool.map(_encode_images, chunks))
        write_archive(out / paths.IMAGE_ARCHIVE, zip(members, encoded, strict=True))

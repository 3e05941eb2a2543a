"""Text cleaning: which kept libraries clean messy multilingual titles best, and at what cost.

Runs the hand-written corpus of benchmarks/messy_titles.py (French, German, other Latin scripts,
Cyrillic, Greek, CJK, emoji, mojibake, HTML entities, double-escaped entities) through:
- before: the project's earlier cleaner (two `html.unescape`, a mojibake regex, NFKD and dropping
  combining marks), which loses "œ", "ß" and every non-Latin script;
- ftfy + unidecode, ftfy + anyascii: ftfy for mojibake and entities, then one transliterator;
- ours: `text.clean_text` (ftfy + anyascii, symbols dropped, one word per Chinese character).
Quality is the share of titles cleaned to exactly the expected words; speed is microseconds per
title on the corpus and on a long (5,000 characters) HTML description.

    python benchmarks/bench_text_cleaning.py [--runs 5]
"""

from __future__ import annotations

import argparse
import html
import re
import sys
import unicodedata
from pathlib import Path

from common import header, median_runs, print_table
from messy_titles import CORPUS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from anyascii import anyascii  # noqa: E402
from unidecode import unidecode  # noqa: E402

from product_classifier.inference.text import clean_text, fix_text, words  # noqa: E402

_TAG = re.compile(r"<[^>]{0,200}>")
_MOJIBAKE = re.compile("[ÃÂâ][\u0080-\u00bf\u2018-\u203a\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u02c6\u02dc\u20ac\u2122]")


def before(designation: str, description: str) -> str:
    """The cleaner this project had until 2026-11 (kept here as the baseline)."""
    parts = []
    for s in (designation, description):
        for _ in range(2):
            s = html.unescape(s)
        if _MOJIBAKE.search(s):
            for codec in ("cp1252", "latin-1"):
                try:
                    s = s.encode(codec).decode("utf-8")
                    break
                except UnicodeError:
                    continue
        parts.append(_TAG.sub(" ", s))
    s = unicodedata.normalize("NFKD", " ".join(parts).lower())
    s = "".join(ch for ch in s if not unicodedata.combining(ch))
    return " ".join(t for t in re.findall(r"[a-z0-9]+", s) if len(t) > 1)


def with_transliterator(fn):
    return lambda d, s: " ".join(words(fn(fix_text(f"{d} {s}"))))


CLEANERS = {
    "before (NFKD, regex)": before,
    "ftfy + unidecode": with_transliterator(unidecode),
    "ftfy + anyascii": with_transliterator(anyascii),
    "ours: ftfy + anyascii, symbols dropped, CJK split": clean_text,
}
LONG = ("<p>Tr&egrave;s bon &eacute;tat, livr&eacute; avec notice &amp; c&acirc;ble USB. Größe 42, "
        "cœur en laine.<br /></p>" * 60)[:5000]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per figure (the median is shown)")
    args = parser.parse_args()
    header(f"text cleaning: {len(CORPUS)} messy titles, median of {args.runs} runs")
    rows, misses = [], {}
    for name, fn in CLEANERS.items():
        wrong = [(d, fn(d, s), e) for d, s, e in CORPUS if fn(d, s) != e]
        misses[name] = wrong
        t_corpus = median_runs(lambda fn=fn: [fn(d, s) for d, s, _ in CORPUS], args.runs, warmup=1)
        t_long = median_runs(lambda fn=fn: [fn("Titre", LONG) for _ in range(20)], args.runs, warmup=1)
        rows.append({"cleaner": name, "expected hit": f"{len(CORPUS) - len(wrong)}/{len(CORPUS)}",
                     "us/title": t_corpus / len(CORPUS) * 1e6, "us/5k-char description": t_long / 20 * 1e6})
    print_table(rows, ["cleaner", "expected hit", "us/title", "us/5k-char description"])
    for name, wrong in misses.items():
        print(f"{name}: misses")
        for d, got, expected in wrong:
            print(f"  {d!r}: {got!r} (expected {expected!r})")


if __name__ == "__main__":
    main()

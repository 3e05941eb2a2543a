"""Text cleaning and tokenizing, shared by preprocess, evaluate and serving.

Cleaning is two kept libraries and two rules (choice measured in docs/text-cleaning.md):
`ftfy` undoes mojibake (UTF-8 read as latin-1/cp1252, even twice), HTML entities (even escaped
twice), ligature code points and full-width forms; `anyascii` transliterates every script to ASCII
("cœur" -> "coeur", "Straße" -> "Strasse", "Набор" -> "Nabor"). Symbols (emoji, ™, ☎) are removed
first, as they are no product words; each Chinese character is its own word (anyascii would glue a
whole run of them into one). Words are lowercase ASCII letters and digits of two characters or more:
`clean_text` keeps exactly what `tokenize` keeps, so "no usable word" is one test, `not cleaned`.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import ftfy
import numpy as np
from anyascii import anyascii

from product_classifier.atomic import atomic_path

PAD, OOV = 0, 1
MIN_WORD = 2  # one-letter tokens are elision debris ("l'", "d'") and units, not product words
_FTFY = ftfy.TextFixerConfig(unescape_html=True, explain=False)
_TAG = re.compile(r"<[^>]{0,200}>")
_WORD = re.compile(rf"[a-z0-9]{{{MIN_WORD},}}")


def _is_missing(field) -> bool:
    return field is None or (isinstance(field, float) and field != field)  # None or NaN


def fix_text(text: str) -> str:
    """Mojibake, HTML entities (also double-escaped), ligatures and full-width forms fixed; tags removed."""
    return _TAG.sub(" ", ftfy.fix_text(text, _FTFY))


def _spaced(ch: str) -> str:
    cat = unicodedata.category(ch)
    if cat == "So" or cat.startswith("C"):  # emoji and other symbols, controls, private use
        return " "
    if unicodedata.name(ch, "").startswith("CJK"):  # one ideograph, one word
        return f" {ch} "
    return ch


def transliterate(text: str) -> str:
    """Any script to ASCII letters, symbols dropped."""
    if text.isascii():
        return text
    return anyascii("".join(ch if ch.isascii() else _spaced(ch) for ch in text))


def words(text: str) -> list[str]:
    """The words of an already fixed and transliterated text."""
    return _WORD.findall(text.lower())


def clean_text(designation: str | None, description: str | None = None) -> str:
    """One lowercase ASCII string of words from a product's two text fields ('' if none is usable)."""
    text = " ".join(str(f) for f in (designation, description) if not _is_missing(f))
    return " ".join(words(transliterate(fix_text(text))))


def tokenize(cleaned: str) -> list[str]:
    return [t for t in cleaned.split() if len(t) >= MIN_WORD]


class Vocabulary:
    """Word -> index map fitted on the training split (0 = padding, 1 = unknown word)."""

    def __init__(self, words: Sequence[str], max_len: int):
        self.words = list(words)
        self.max_len = max_len
        self._index = {w: i + 2 for i, w in enumerate(self.words)}

    @property
    def size(self) -> int:
        return len(self.words) + 2

    @classmethod
    def fit(cls, texts: Iterable[str], max_words: int, max_len: int) -> Vocabulary:
        counts = Counter(t for text in texts for t in tokenize(text))
        # Ties broken alphabetically so the vocabulary is the same on every run.
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return cls([w for w, _ in ranked[: max_words - 2]], max_len)

    def encode(self, texts: Iterable[str]) -> np.ndarray:
        rows = []
        for text in texts:
            # No usable word: one unknown word, the explicit unknown-text input (all padding would
            # be a fully masked sequence, which the LSTM cannot read).
            ids = [self._index.get(t, OOV) for t in tokenize(text)][: self.max_len] or [OOV]
            rows.append(ids + [PAD] * (self.max_len - len(ids)))
        return np.asarray(rows, dtype=np.int32).reshape(-1, self.max_len)

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps({"max_len": self.max_len, "words": self.words}, ensure_ascii=False))

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        data = json.loads(Path(path).read_text())
        return cls(data["words"], int(data["max_len"]))

"""Text cleaning and tokenizing, shared by preprocess, evaluate and serving."""

from __future__ import annotations

import html
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from .atomic import atomic_path

PAD, OOV = 0, 1
_TAG = re.compile(r"<[^>]{0,200}>")
_TOKEN = re.compile(r"[a-z0-9]+")
_MOJIBAKE = re.compile("[ÃÂâ][\u0080-\u00bf\u2018-\u203a\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u02c6\u02dc\u20ac\u2122]")


def fix_mojibake(text: str) -> str:
    """Undo UTF-8 bytes read as cp1252/latin-1 ('Ã©' -> 'é'); leave clean text alone."""
    if not _MOJIBAKE.search(text):
        return text
    for codec in ("cp1252", "latin-1"):
        try:
            return text.encode(codec).decode("utf-8")
        except UnicodeError:
            continue
    return text


def clean_text(designation: str | None, description: str | None = None) -> str:
    """One lowercase, accent-free, tag-free string from a product's two text fields."""
    parts = []
    for field in (designation, description):
        if field is None or (isinstance(field, float) and field != field):  # None or NaN
            continue
        s = str(field)
        for _ in range(2):  # entities are sometimes escaped twice (&amp;eacute;)
            s = html.unescape(s)
        s = fix_mojibake(s)
        s = _TAG.sub(" ", s)
        parts.append(s)
    s = unicodedata.normalize("NFKD", " ".join(parts).lower())
    s = "".join(ch for ch in s if not unicodedata.combining(ch))
    return " ".join(_TOKEN.findall(s))


def tokenize(cleaned: str) -> list[str]:
    return [t for t in cleaned.split() if len(t) > 1]


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
            ids = [self._index.get(t, OOV) for t in tokenize(text)][: self.max_len]
            rows.append(ids + [PAD] * (self.max_len - len(ids)))
        return np.asarray(rows, dtype=np.int32).reshape(-1, self.max_len)

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps({"max_len": self.max_len, "words": self.words}, ensure_ascii=False))

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        data = json.loads(Path(path).read_text())
        return cls(data["words"], int(data["max_len"]))

"""Text cleaning and tokenizing: the code serving shares with training."""

from __future__ import annotations

import runpy

import numpy as np
import pytest

from conftest import PROJECT
from product_classifier.inference.text import MIN_WORD, OOV, PAD, Vocabulary, clean_text, tokenize

# The hand-written corpus the cleaning libraries were chosen on (benchmarks/bench_text_cleaning.py).
CORPUS = runpy.run_path(str(PROJECT / "benchmarks/messy_titles.py"))["CORPUS"]
# Kana are romanised letter by letter ("omochiya"): a known limit of the transliteration library.
KNOWN_MISSES = {"おもちゃ"}


@pytest.mark.parametrize(
    ("designation", "description", "expected"),
    [
        ("Poupée <b>Barbie</b>", "", "poupee barbie"),
        ("Livre d&#39;occasion", "<p>Tr&egrave;s bon &eacute;tat<br />rare</p>", "livre occasion tres bon etat rare"),
        ("PoupÃ©e bÃ©bÃ©", None, "poupee bebe"),  # mojibake: UTF-8 read as latin-1
        ("double &amp;eacute;chappé", float("nan"), "double echappe"),
        ("Spielzeug GRÖSSE 3", "", "spielzeug grosse"),
        ("Cœur", "Œuf größe", "coeur oeuf grosse"),  # ligatures become letters, not nothing
        ("Набор игрушек", None, "nabor igrushek"),
        ("déjà vu", "", "deja vu"),
    ],
)
def test_clean_text(designation, description, expected):
    assert clean_text(designation, description) == expected


@pytest.mark.parametrize(("designation", "description", "expected"), [
    pytest.param(*case, id=case[0], marks=[pytest.mark.xfail(reason="kana romanised letter by letter", strict=True)]
                 if case[0] in KNOWN_MISSES else []) for case in CORPUS])
def test_clean_text_on_the_messy_corpus(designation, description, expected):
    assert clean_text(designation, description) == expected


@pytest.mark.parametrize("designation", [c[0] for c in CORPUS] + ["l'a", "x 2 y", "ab", "Ô", "🎁 a"])
def test_empty_check_matches_what_tokenize_keeps(designation):
    """`not clean_text(...)` is the "no usable word" test: it must agree with the tokens the model gets."""
    cleaned = clean_text(designation)
    assert cleaned.split() == tokenize(cleaned)
    assert all(len(t) >= MIN_WORD for t in tokenize(cleaned))
    assert (not cleaned) == (not tokenize(cleaned))


def test_text_with_no_usable_word_encodes_as_one_unknown_word():
    v = Vocabulary.fit(["chat chien"], max_words=100, max_len=4)
    assert clean_text("🎁🎉 !!!", "  ") == ""
    assert v.encode([""])[0].tolist() == [OOV, PAD, PAD, PAD]  # explicit unknown text, never all padding


def test_vocabulary_is_frequency_ranked_and_deterministic():
    texts = ["bb aa aa x", "cc bb aa", "dd"]  # one-character words are dropped
    v1 = Vocabulary.fit(texts, max_words=100, max_len=4)
    v2 = Vocabulary.fit(list(reversed(texts)), max_words=100, max_len=4)
    assert v1.words == ["aa", "bb", "cc", "dd"] == v2.words  # by count, ties alphabetical


def test_encode_pads_truncates_and_marks_unknown_words(tmp_path):
    v = Vocabulary.fit(["chat chien chat", "chien lit"], max_words=100, max_len=3)
    enc = v.encode(["chat zebre", "lit lit lit lit chien"])
    assert enc.dtype == np.int32 and enc.shape == (2, 3)
    assert enc[0].tolist() == [2, OOV, PAD]
    assert enc[1].tolist() == [4, 4, 4]
    v.save(tmp_path / "vocab.json")
    again = Vocabulary.load(tmp_path / "vocab.json")
    assert again.words == v.words and again.max_len == 3
    assert (again.encode(["chat zebre"]) == enc[:1]).all()


def test_max_words_caps_the_vocabulary():
    v = Vocabulary.fit(["aa bb cc dd ee"], max_words=4, max_len=5)
    assert v.size == 4 and len(v.words) == 2

"""Text cleaning and tokenizing: the code serving shares with training."""

from __future__ import annotations

import numpy as np
import pytest

from product_classifier.text import OOV, PAD, Vocabulary, clean_text, fix_mojibake


@pytest.mark.parametrize(
    ("designation", "description", "expected"),
    [
        ("Poupée <b>Barbie</b>", "", "poupee barbie"),
        ("Livre d&#39;occasion", "<p>Tr&egrave;s bon &eacute;tat<br />rare</p>", "livre d occasion tres bon etat rare"),
        ("PoupÃ©e bÃ©bÃ©", None, "poupee bebe"),  # mojibake: UTF-8 read as latin-1
        ("double &amp;eacute;chappé", float("nan"), "double echappe"),
        ("Spielzeug GRÖSSE 3", "", "spielzeug grosse 3"),
    ],
)
def test_clean_text(designation, description, expected):
    assert clean_text(designation, description) == expected


def test_fix_mojibake_leaves_clean_text_alone():
    assert fix_mojibake("déjà vu") == "déjà vu"
    assert fix_mojibake("déjà vu".encode().decode("latin-1")) == "déjà vu"
    assert fix_mojibake("Ã©tÃ© â€“ ok") == "été – ok"  # cp1252 variant


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

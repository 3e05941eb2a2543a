"""A corpus of messy product titles, the way the real catalogue has them, with what cleaning must give.

Each entry is (designation, description, expected): `expected` is the cleaned text, lowercase ASCII
words of two or more characters (what `tokenize` keeps). Written by hand for the transliteration
benchmark (bench_text_cleaning.py) and reused by the text tests.
"""

from __future__ import annotations

CORPUS: list[tuple[str, str, str]] = [
    # French: accents, ligatures, elisions, HTML tags and entities
    ("Cœur en peluche", "", "coeur en peluche"),
    ("Œuf de Pâques en chocolat", "", "oeuf de paques en chocolat"),
    ("Poupée <b>Barbie</b> Dreamhouse", "", "poupee barbie dreamhouse"),
    ("Livre d&#39;occasion", "<p>Tr&egrave;s bon &eacute;tat<br />rare</p>", "livre occasion tres bon etat rare"),
    ("Ex&oelig;quo sœurs et cæcum", "", "exoequo soeurs et caecum"),
    ("Maître-nageur &amp; bouée", "", "maitre nageur bouee"),
    ("Tapis d&rsquo;éveil bébé", "", "tapis eveil bebe"),
    ("Piscine hors-sol 3,66 m × 0,76 m", "", "piscine hors sol 66 76"),
    # double-escaped entities, as exported twice
    ("double &amp;eacute;chappé", "", "double echappe"),
    ("Jeu &amp;amp; jouet", "&lt;p&gt;Livr&amp;eacute; complet&lt;/p&gt;", "jeu jouet livre complet"),
    # mojibake: UTF-8 read as latin-1 / cp1252, once or twice
    ("PoupÃ©e bÃ©bÃ©", "", "poupee bebe"),
    ("Ã‰tÃ© â€“ parasol", "", "ete parasol"),
    ("CÅ“ur de pirate", "", "coeur de pirate"),
    ("GrÃ¶ÃŸe 42 Schuhe", "", "grosse 42 schuhe"),
    ("ÃƒÂ©cole maternelle", "", "ecole maternelle"),
    # German
    ("Straße Spielzeug Größe 3", "", "strasse spielzeug grosse"),
    ("Kinderwagen für Zwillinge – Übergröße", "", "kinderwagen fur zwillinge ubergrosse"),
    # Spanish, Italian, Portuguese, Nordic, Polish, Czech, Turkish
    ("Muñeca niño pequeño", "", "muneca nino pequeno"),
    ("Caffè della nonna", "", "caffe della nonna"),
    ("Coração de manteiga", "", "coracao de manteiga"),
    ("Smørrebrød ærlig Ålborg", "", "smorrebrod aerlig alborg"),
    ("Zabawka dla dziecka łódź", "", "zabawka dla dziecka lodz"),
    ("Dětská hračka", "", "detska hracka"),
    ("Çocuk oyuncağı ışık", "", "cocuk oyuncagi isik"),
    # Cyrillic, Greek
    ("Набор игрушек", "", "nabor igrushek"),
    ("Детская коляска", "", "detskaya kolyaska"),
    ("Παιχνίδι για παιδιά", "", "paichnidi gia paidia"),
    # CJK (transliterated syllables are words the vocabulary can learn)
    ("儿童玩具", "", "er tong wan ju"),
    ("おもちゃ", "", "omocha"),
    ("장난감", "", "jangnangam"),
    # typographic forms: ligature code points, full width, superscripts, curly quotes
    ("Ｎｉｎｔｅｎｄｏ Ｓｗｉｔｃｈ", "", "nintendo switch"),
    ("ﬁlet de pêche ﬂotteur", "", "filet de peche flotteur"),
    ("Tasse « café » 25 cl", "", "tasse cafe 25 cl"),
    ("Moteur 2ᵉ génération 10 m²", "", "moteur 2e generation 10 m2"),
    # emoji and symbols carry no product word
    ("🎁🎉🔥", "", ""),
    ("Cadeau 🎁 enfant ⭐⭐⭐", "", "cadeau enfant"),
    ("Téléphone ☎ 📱 neuf ™", "", "telephone neuf"),
    ("!!! ??? ...", "", ""),
    ("- / - * -", "   ", ""),
    ("a b c d", "", ""),
]

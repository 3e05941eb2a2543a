"""The 27 product type codes: the one place that knows them, their names and their mix."""

from __future__ import annotations

# Class counts in the real training set (84,916 rows); the embedded sample keeps these proportions. (The drift
# statistics compare live predictions with the model's own predicted mix on validation, in fusion.json, not these.)
REAL_COUNTS: dict[int, int] = {
    2583: 10209, 1560: 5073, 1300: 5045, 2060: 4993, 2522: 4989, 1280: 4870, 2403: 4774,
    2280: 4760, 1920: 4303, 1160: 3953, 1320: 3241, 10: 3116, 2705: 2761, 1140: 2671,
    2582: 2589, 40: 2508, 2585: 2496, 1302: 2491, 1281: 2070, 50: 1681, 2462: 1421,
    2905: 872, 60: 832, 2220: 824, 1301: 807, 1940: 803, 1180: 764,
}

# Community guesses, not official names.
CATEGORIES: dict[int, str] = {
    10: "used books",
    40: "retro video games and gear",
    50: "gaming accessories",
    60: "game consoles",
    1140: "figurines",
    1160: "trading cards",
    1180: "figurines and board games",
    1280: "children's toys",
    1281: "board games",
    1300: "model making",
    1301: "baby clothes and home games",
    1302: "outdoor toys",
    1320: "baby gear",
    1560: "indoor furniture",
    1920: "household linen",
    1940: "food and tableware",
    2060: "home decoration",
    2220: "pet supplies",
    2280: "old newspapers and magazines",
    2403: "books, comics and magazines",
    2462: "second-hand consoles and games",
    2522: "stationery",
    2582: "outdoor furniture",
    2583: "pool equipment",
    2585: "tools and housework",
    2705: "new books",
    2905: "PC games",
}

# Model output index i is CLASSES[i].
CLASSES: tuple[int, ...] = tuple(sorted(REAL_COUNTS))
NUM_CLASSES = len(CLASSES)
INDEX: dict[int, int] = {code: i for i, code in enumerate(CLASSES)}


def category(code: int) -> str:
    return CATEGORIES[code]

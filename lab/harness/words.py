"""Random words for stage payloads, seeded like the tester's CODECRAFTERS_RANDOM_SEED.

The tester draws fruit names; so do we. A `random.Random(seed)` per run keeps a run
reproducible from its `--seed`.
"""

from __future__ import annotations

import random

FRUITS = (
    "apple", "banana", "blueberry", "cherry", "grape", "mango", "orange", "pear",
    "pineapple", "raspberry", "strawberry", "watermelon", "apricot", "blackberry",
    "coconut", "fig", "guava", "kiwi", "lemon", "lime", "lychee", "melon", "nectarine",
    "papaya", "peach", "plum", "pomegranate", "quince", "tangerine", "date",
)


class Words:
    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def one(self) -> str:
        return self._rng.choice(FRUITS)

    def distinct(self, count: int) -> list[str]:
        return self._rng.sample(FRUITS, count)

    def shuffled(self, items: list[str]) -> list[str]:
        copy = list(items)
        self._rng.shuffle(copy)
        return copy

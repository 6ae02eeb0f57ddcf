"""The baseline: concepts uniformly at random (still without repeats)."""
from __future__ import annotations

import numpy as np

from policies.base import Policy, register


@register
class RandomPolicy(Policy):
    name = "random"

    def scores(self) -> np.ndarray | None:
        return None

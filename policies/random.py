"""The baseline: concepts uniformly at random (still without repeats, and no re-asks)."""
from __future__ import annotations

import numpy as np

from policies.base import Policy
from policies.registry import register


@register
class RandomPolicy(Policy):
    name = "random"
    reasks = False
    takes_prior = False

    def scores(self) -> np.ndarray | None:
        return None

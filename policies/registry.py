"""The policies by name. Each policy module registers its class here with `@register`; the
package's `__init__` imports every policy module, so `make_policy` finds them all once anything
of `policies` is imported (timm's pattern: the registered modules import the registry, never the
reverse)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from explorer.config import PolicyConfig

if TYPE_CHECKING:  # annotations only: at run time base.py imports this module, not the reverse
    from policies.base import Policy

POLICIES: dict[str, type[Policy]] = {}


def register(cls: type[Policy]) -> type[Policy]:
    POLICIES[cls.name] = cls
    return cls


def make_policy(name: str, concepts: list[str], embeddings: np.ndarray, cfg: PolicyConfig,
                seed: int, relevance: dict[str, float] | None = None) -> Policy:
    """The policy registered as `name` (gp, ucb, random, oracle); `relevance` for oracle only."""
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}: choose from {', '.join(sorted(POLICIES))}")
    if name == "oracle":
        return POLICIES[name](concepts, embeddings, cfg, seed, relevance=relevance)
    return POLICIES[name](concepts, embeddings, cfg, seed)

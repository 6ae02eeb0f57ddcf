"""Query selection: which concepts to search for next.

Importing the package registers every policy (each module below calls `registry.register`),
so `policies.registry.make_policy` knows them all whichever module of the package a caller
imports first.
"""
from policies import gp, oracle, random, ucb

__all__ = ["gp", "oracle", "random", "ucb"]   # imported to register themselves

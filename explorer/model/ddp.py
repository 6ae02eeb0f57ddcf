"""Several training processes under torchrun: rank 0 runs the loop, every rank trains.

    torchrun --nproc_per_node N -m explorer run --target T ...

Rank 0 searches, crawls, scores, updates the policy, writes the database, the run directory,
the checkpoints and the logs, as one process does. The other ranks (followers) write nothing:
they wait for rank 0's messages, each one Python object broadcast from rank 0
(`torch.distributed.broadcast_object_list`):

    ("start", cfg, target_train, checkpoint)   build a learner (the same checkpoint, read-only)
    ("train", round, RoundImages)              train the round with rank 0, under DDP
    ("stop",)                                  the run is over (or rank 0 failed): return

Every rank reads the run's files by path (images, target, checkpoint): one machine, or a
filesystem all of them share. Without torchrun's environment (RANK, WORLD_SIZE), or with a
world of one, nothing here runs: `start` returns None.

A rank waits for the others at most `timeout_s` (EXPLORE_DDP_TIMEOUT_S, default 3 h: rank 0
crawls and scores while the followers wait, and a crawl may pause for a search engine that is
down); past it the waiting rank fails instead of hanging. Rank 0 tells the followers to stop
whenever its run ends, an error included, unless the error came in the middle of a collective
(a training step): then the followers are ended by torchrun, or by the timeout.
"""
from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

MAIN = 0
DEFAULT_TIMEOUT_S = 3 * 3600.0


def timeout_s() -> float:
    return float(os.environ.get("EXPLORE_DDP_TIMEOUT_S", DEFAULT_TIMEOUT_S))


@dataclass
class Ranks:
    """This process's place among the training processes, and the messages between them."""

    rank: int
    world: int
    broken: bool = False     # an error in the middle of a collective: no more messages

    @property
    def is_main(self) -> bool:
        return self.rank == MAIN

    def send(self, message: tuple) -> None:
        """Rank 0: one message to every follower."""
        assert self.is_main
        dist.broadcast_object_list([message], src=MAIN)

    def receive(self) -> tuple:
        """A follower: the next message from rank 0 (waits up to the group's timeout)."""
        box = [None]
        dist.broadcast_object_list(box, src=MAIN)
        return box[0]

    @contextmanager
    def collective(self):
        """Work that every rank does together (a round's training): an error inside leaves the
        others waiting in a collective, so no further message may be sent."""
        try:
            yield
        except BaseException:
            self.broken = True
            raise

    def gather(self, value) -> list:
        """`value` from every rank, in rank order, on every rank."""
        out = [None] * self.world
        dist.all_gather_object(out, value)
        return out

    def stop(self) -> None:
        """Rank 0, at the end of its run (however it ends): the followers return."""
        if self.is_main and not self.broken:
            try:
                self.send(("stop",))
            except Exception:  # noqa: BLE001 - a follower already gone (it failed): the run's
                pass           # own error, not this one, is what the user must see

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def start() -> Ranks | None:
    """Join the process group torchrun's environment describes (gloo on CPU, nccl on GPU,
    with the timeout above); None where there is none, or where the world is one process."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from explorer.model.train import setup_distributed

    setup_distributed(timeout=timedelta(seconds=timeout_s()))
    return Ranks(dist.get_rank(), dist.get_world_size())


def rank_seed(seed: int, round_: int, rank: int) -> int:
    """A follower's torch seed for a round (its own masks and crops), the same on a resume."""
    return int(np.random.SeedSequence([seed, round_, rank]).generate_state(1)[0])


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """A short sha256 of a state dict's bytes (every parameter and buffer): equal on two ranks
    iff their replicas hold the same weights."""
    h = hashlib.sha256()
    for name, t in state.items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]

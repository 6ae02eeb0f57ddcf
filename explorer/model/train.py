"""MUG training: AdamW, warm-up then cosine, clipping, accumulation, bf16 on GPU, DDP.

One optimiser step consumes `grad_accum` micro-batches of `batch_size` images; the effective
batch is batch_size * grad_accum, and the peak learning rate is `lr * effective_batch / 256`
(MAE's rule). Under torchrun the model is wrapped in DistributedDataParallel and each of the
world_size processes trains on its share of every micro-batch, batch_size / world_size images
(`data.mixed_batches`): one process and N train on the same images per step, with the same
learning rate. Rank 0 alone writes checkpoints.

A checkpoint is one plain dict {model, optimizer, scheduler, step, rng, config}, written to
a temp file, fsynced and renamed over the old one.

    torchrun --nproc_per_node N -m explorer.model.train --target T.tsv --steps 100 --save ck.pt
"""
from __future__ import annotations

import argparse
import heapq
import itertools
from contextlib import nullcontext
import math
import os
import pickle
import random
import time
from datetime import timedelta
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from cache.atomic import atomic_write
from cache.db import ScoredImage
from explorer.config import Config, apply_overrides
from explorer.errors import BadCheckpoint, BadSetting, CheckpointNotSaved, first_line
from explorer.model.mug import MUG

NO_DECAY = {"pos_embed", "cls_token", "mask_token"}


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on norms, biases, position embeddings and tokens."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.split(".")[-1] in NO_DECAY:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def lr_factor(step: int, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    """Linear warm-up over `warmup` steps, then cosine from 1 to min_ratio at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def sample_replay(rows: Iterable[ScoredImage], n: int, temperature: float, mean: float, std: float,
                  rng: np.random.Generator) -> list[ScoredImage]:
    """The replay pool: n of `rows` drawn without replacement with p ∝ exp(z / τ), z the row's
    `reward` z-scored by (mean, std) of all of them: high rewards are favoured, low ones still
    picked now and then (a hard top-k would replay one narrow band, scored by encoders since
    moved on). Gumbel top-k over a stream: holds n rows at a time, whatever the stream's length.
    Returns the drawn rows, highest key first."""
    if n <= 0:
        return []
    scale = max(float(std), 1e-12) * max(float(temperature), 1e-12)
    heap: list[tuple[float, int, ScoredImage]] = []
    seen, rows = 0, iter(rows)
    while chunk := list(itertools.islice(rows, 4096)):   # Gumbel draws a chunk at a time
        reward = np.fromiter((float(r.reward) for r in chunk), np.float64, len(chunk))
        keys = (reward - mean) / scale + rng.gumbel(size=len(chunk))
        floor = heap[0][0] if len(heap) >= n else -np.inf   # keys below it cannot enter
        for j in np.flatnonzero(keys > floor).tolist():
            if len(heap) < n:
                heapq.heappush(heap, (float(keys[j]), seen + j, chunk[j]))
            elif keys[j] > heap[0][0]:
                heapq.heapreplace(heap, (float(keys[j]), seen + j, chunk[j]))
        seen += len(chunk)
    return [row for _, _, row in sorted(heap, key=lambda e: (-e[0], e[1]))]


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


class Trainer:
    def __init__(self, cfg: Config, model: MUG, device: str | torch.device):
        self.cfg = cfg
        self.device = torch.device(device)
        self.model = model.to(self.device)      # the bare model: embed(), state_dict()
        t = cfg.train
        self.step = 0
        self.extra: dict = {}                   # caller state from the last checkpoint loaded
        self.autocast = self.device.type == "cuda" and t.bf16
        if t.batch_size % world_size():
            raise BadSetting(f"train.batch_size={t.batch_size} is the batch of all {world_size()} "
                             "processes together: make it a multiple of their number")
        self.effective_batch = t.batch_size * t.grad_accum
        peak_lr = t.lr * self.effective_batch / 256
        self.optimizer = torch.optim.AdamW(param_groups(self.model, t.weight_decay), lr=peak_lr,
                                           betas=tuple(t.betas),
                                           fused=self.device.type == "cuda")
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: lr_factor(s, t.warmup_steps, t.total_steps, t.min_lr_ratio))
        net = self.model
        if dist.is_initialized():
            net = DDP(net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.ddp = net if isinstance(net, DDP) else None
        self.net = torch.compile(net) if t.compile else net   # what forward/backward run on

    # ---- training -------------------------------------------------------------------------
    def _micro_step(self, imgs, tokens, token_mask, sync: bool) -> dict:
        imgs = imgs.to(self.device, non_blocking=True)
        tokens = tokens.to(self.device, non_blocking=True)
        token_mask = token_mask.to(self.device, non_blocking=True)
        ctx = self.ddp.no_sync() if (self.ddp is not None and not sync) else nullcontext()
        with ctx:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast):
                out = self.net(imgs, tokens, token_mask)
            (out["loss"] / self.cfg.train.grad_accum).backward()
        return {k: v.detach() for k, v in out.items()}

    def train_steps(self, n: int, batches: Iterable) -> dict:
        """Run n optimiser steps on micro-batches (imgs, tokens, token_mask) from `batches`.
        Returns mean loss, pixel_loss, caption_loss over the steps (averaged across ranks),
        images_per_s (all ranks), steps done, lr and the global step."""
        self.net.train()
        accum = self.cfg.train.grad_accum
        it = iter(batches)
        sums = torch.zeros(3, device=self.device)
        images = 0
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        done = 0
        for _ in range(n):
            for micro in range(accum):
                try:
                    imgs, tokens, token_mask = next(it)
                except StopIteration:
                    break
                out = self._micro_step(imgs, tokens, token_mask, sync=micro == accum - 1)
                sums += torch.stack([out["loss"], out["pixel_loss"], out["caption_loss"]]).float()
                images += imgs.shape[0]
            else:
                self._optimizer_step()
                done += 1
                continue
            self.optimizer.zero_grad(set_to_none=True)  # a partial accumulation is dropped
            break
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - t0
        if dist.is_initialized():
            dist.all_reduce(sums)
            sums /= world_size()
        means = (sums / max(1, done * accum)).tolist()
        return {"loss": means[0], "pixel_loss": means[1], "caption_loss": means[2],
                "images_per_s": images * world_size() / max(seconds, 1e-9), "steps": done,
                "lr": self.scheduler.get_last_lr()[0], "step": self.step}

    def _optimizer_step(self) -> None:
        if self.cfg.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1

    # ---- checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        np_state = np.random.get_state()
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                # numpy's key array as a tensor, so that the file loads with weights_only=True
                "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)),
                          *np_state[2:]],
                "python": random.getstate(),
            },
            "config": self.cfg.to_dict(),
        }

    def save_checkpoint(self, path: str | Path, extra: dict | None = None) -> None:
        """Write the checkpoint atomically (tmp, fsync, rename); rank 0 only. `extra` holds
        the caller's own state (plain types), given back as `self.extra` by load_checkpoint."""
        if not is_main():
            return
        try:
            with atomic_write(path) as f:
                torch.save({**self.state_dict(), "extra": extra or {}}, f)
        except (OSError, RuntimeError) as e:  # torch.save reports a failed write as RuntimeError
            raise CheckpointNotSaved(
                f"cannot write checkpoint {path} ({first_line(e)}): the previous one is kept; free "
                "space there (or make it writable), then `explore resume` continues from it") from e

    def load_checkpoint(self, path: str | Path) -> dict:
        """Restore model, optimiser, scheduler, step and RNG states; returns the config dict
        stored in the checkpoint. A file that is not such a checkpoint raises BadCheckpoint."""
        ck = read_checkpoint(path)
        try:
            self.extra = ck.get("extra", {})
            self.model.load_state_dict(ck["model"])
            self.optimizer.load_state_dict(ck["optimizer"])
            self.scheduler.load_state_dict(ck["scheduler"])
            self.step = ck["step"]
            rng = ck["rng"]
            torch.set_rng_state(rng["torch"])
            if rng["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
            name, key, *rest = rng["numpy"]
            np.random.set_state((name, key.numpy().astype(np.uint32), *rest))
            random.setstate(_as_tuples(rng["python"]))
            return ck["config"]
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as e:
            # a missing entry, another model's shapes, another optimiser: the file's contents
            raise BadCheckpoint(f"checkpoint {path} does not fit this run ({type(e).__name__}: "
                                f"{first_line(e)}); {CHECKPOINT_ADVICE}") from e


CHECKPOINT_ADVICE = "replace it with a good copy (an earlier checkpoints/round-NNNN.pt) or move it away"


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint dict at `path`, loaded weights-only (a checkpoint is data: it never runs
    code). An unreadable, truncated or not weights-only file raises BadCheckpoint."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # torch's own message offers to unpickle it unsafely
        raise BadCheckpoint(f"cannot load checkpoint {path}: it is damaged, or holds objects that a "
                            f"weights-only load refuses to build; {CHECKPOINT_ADVICE}") from e
    except Exception as e:  # noqa: BLE001 - the weights-only unpickler meets damaged bytes with any
        # error (IndexError, KeyError, struct.error, ...): each means this file cannot be loaded
        raise BadCheckpoint(f"cannot load checkpoint {path} ({type(e).__name__}: {first_line(e)}); "
                            f"{CHECKPOINT_ADVICE}") from e
    if not isinstance(ck, dict):
        raise BadCheckpoint(f"{path} holds a {type(ck).__name__}, not a checkpoint; {CHECKPOINT_ADVICE}")
    return ck


def _as_tuples(x):
    return tuple(_as_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


# ---- entry point (also what torchrun launches) -----------------------------------------------
def read_records(path: str | None):
    """A TSV of `path<TAB>caption` lines (caption optional) -> list[ImageRecord]."""
    from explorer.model.data import ImageRecord

    if not path:
        return []
    records = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            file, _, caption = line.partition("\t")
            records.append(ImageRecord(file, caption or None))
    return records


def setup_distributed(timeout: timedelta | None = None) -> torch.device:
    """Initialise torch.distributed from torchrun's environment, if present; pick the device.
    `timeout`: how long a collective waits for the other ranks (torch's default otherwise)."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend, **({"timeout": timeout} if timeout else {}))
        if torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", 0))
            torch.cuda.set_device(local)
            return torch.device("cuda", local)
        return torch.device("cpu")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def main(argv: list[str] | None = None) -> None:
    from explorer.model.data import mixed_batches
    from explorer.model.mug import MODEL_CONFIGS, build_model
    from explorer.inputs.text import load_tokenizer

    ap = argparse.ArgumentParser(description="Train MUG on image files listed in TSVs.")
    ap.add_argument("--config", help="config.toml (defaults otherwise)")
    ap.add_argument("--set", action="append", default=[], help="section.field=value")
    ap.add_argument("--target", help="TSV of target images (path, no caption)")
    ap.add_argument("--candidates", help="TSV of candidate images (path<TAB>caption)")
    ap.add_argument("--replay", help="TSV of replay images (path<TAB>caption)")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--resume", help="checkpoint to continue from")
    ap.add_argument("--save", help="checkpoint to write at the end")
    ap.add_argument("--weights-per-rank", help="also write each rank's model weights to "
                    "DIR/rank{R}.pt (to check that replicas agree)")
    args = ap.parse_args(argv)

    cfg = Config.load(args.config) if args.config else Config()
    apply_overrides(cfg, args.set)
    device = setup_distributed()
    rank = dist.get_rank() if dist.is_initialized() else 0
    torch.manual_seed(cfg.run.seed)          # same initial weights on every rank
    tokenizer = load_tokenizer()
    model = build_model(cfg.model, tokenizer.vocab_size)
    torch.manual_seed(cfg.run.seed + rank)   # then each rank its own masks
    trainer = Trainer(cfg, model, device)
    if args.resume:
        trainer.load_checkpoint(args.resume)
    batches = mixed_batches(read_records(args.target), read_records(args.candidates),
                            read_records(args.replay), cfg, tokenizer,
                            MODEL_CONFIGS[cfg.model.name].image_size, cfg.run.seed + trainer.step)
    stats = trainer.train_steps(args.steps, batches)
    if is_main():
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in stats.items()},
              flush=True)
    if args.save:
        trainer.save_checkpoint(args.save)
    if args.weights_per_rank:
        Path(args.weights_per_rank).mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), Path(args.weights_per_rank) / f"rank{rank}.pt")
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()

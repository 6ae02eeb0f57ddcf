"""The model side of a round: score the round's images against the target with the current
encoder, then train MUG on them (ARCHITECTURE.md, "One round").

Both run in a worker thread (training while the event loop crawls the next round), so the
learner never touches the database: the loop hands it file paths and captions and takes back
rewards and training statistics.

Under torchrun (explorer/model/ddp.py) rank 0's learner tells the other ranks what to train,
and each of them runs a follower learner (`follow`) that trains the same rounds with it.
"""
from __future__ import annotations

import json
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from explorer.config import Config
from explorer.model import ddp
from explorer.model.data import ImageRecord, embed_paths, eval_transform, mixed_batches
from explorer.errors import BadSetting
from explorer.crawl.images import to_rgb
from explorer.model.mug import MODEL_CONFIGS, WeightsUnavailable, build_model, new_model
from explorer.model.reward import scored_rewards
from explorer.session import RunDir
from explorer.model.train import Trainer

SCORE_CHUNK = 8192   # images embedded at once when scoring


@dataclass
class RoundImages:
    """What the loop hands the learner for one round."""

    candidates: list[tuple[str, str, str]]   # (sha256, path, caption) kept this round
    replay: list[tuple[str, str, str]]       # earlier images, drawn by their fresh reward


def pick_device(name: str) -> torch.device:
    """run.device as a torch device this machine has; BadSetting (one line) otherwise."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise BadSetting(f"run.device={name!r} is not a device: use auto, cpu, cuda or cuda:N")
    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device.type == "cuda" and (device.index or 0) >= have:
        raise BadSetting(f"run.device={name} but this machine has {have} CUDA device(s): "
                         "use run.device=auto or cpu")
    return device


def reward_encoder(cfg: Config, vocab_size: int, device: torch.device):
    """The frozen encoder reward.encoder names (model.name's architecture, its weights from
    scratch, timm or a file, never trained), or None for "model": the encoder being trained."""
    if cfg.reward.encoder == "model":
        return None
    try:
        frozen = build_model(replace(cfg.model, init=cfg.reward.encoder), vocab_size=vocab_size)
    except WeightsUnavailable as e:  # (its message names --init: say which option it was)
        raise WeightsUnavailable(str(e).replace("--init ", "--set reward.encoder=")) from None
    return frozen.requires_grad_(False).eval().to(device)


class Learner:
    """`ranks`: this process's place under torchrun (None: the only process). Rank 0's learner
    does everything; a follower's (any other rank) only trains, never downloads weights (DDP
    copies rank 0's when it wraps the model) and never writes."""

    def __init__(self, cfg: Config, run: RunDir, target_train: list[str], target=None,
                 checkpoint: Path | None = None, ranks: ddp.Ranks | None = None):
        from explorer.inputs.text import load_tokenizer

        self.cfg = cfg
        self.run = run
        self.ranks = ranks
        self.follower = ranks is not None and not ranks.is_main
        self.device = pick_device(cfg.run.device)
        if ranks is not None and self.device.type == "cuda":   # one GPU a rank: LOCAL_RANK's
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.tokenizer = load_tokenizer(cfg.policy.text_model)
        torch.manual_seed(cfg.run.seed)
        checkpoint = checkpoint or run.latest_checkpoint
        if ranks is not None and ranks.is_main:   # the followers build theirs alongside
            ranks.send(("start", cfg, list(target_train), str(checkpoint)))
        with ranks.collective() if ranks is not None else nullcontext():
            # a checkpoint holds every weight: the starting ones (a download, a file) are not needed again
            make = new_model if checkpoint.exists() or self.follower else build_model
            self.model = make(cfg.model, vocab_size=self.tokenizer.vocab_size)
            self.trainer = Trainer(cfg, self.model, self.device)   # under DDP: every rank at once
        self.reward_model = None if self.follower else reward_encoder(
            cfg, self.tokenizer.vocab_size, self.device)
        self.image_size = MODEL_CONFIGS[cfg.model.name].image_size
        self.target = [ImageRecord(p, None) for p in target_train]
        self.target_train = list(target_train)
        self.eval_target = target if target is not None and target.labelled and target.test is not None else None
        self.rounds_done = 0
        self.progress = None                    # RunProgress: train_started / trained_step hooks
        self.policy_state: dict | None = None
        self.last_report: dict | None = None    # the record of the last checkpointed round
        if checkpoint.exists():
            self._restore(checkpoint)

    def _restore(self, path: Path) -> None:
        self.trainer.load_checkpoint(path)
        extra = self.trainer.extra.get("explore", {})
        self.rounds_done = int(extra.get("round", -1)) + 1
        self.policy_state = json.loads(extra["policy"]) if "policy" in extra else None
        self.last_report = json.loads(extra["report"]) if "report" in extra else None

    # ---- one round ------------------------------------------------------------------------
    def score(self, candidates: list[tuple[str, str, str]], background: list[str] = ()) -> dict[str, float]:
        """r(image) for this round's (sha256, path, caption) candidates with the current
        encoder, before it trains on them (Internet Explorer's order): the policy learns from
        round t before it picks round t+1. `background`: paths of the web sample that places
        the centre (reward.centre = "web"); the candidates themselves when it is empty.
        The loop's refresh re-scores earlier rounds' images through here too."""
        if not candidates:
            return {}
        target_emb = self.embed(self.target_train)
        web = self.embed(list(background)) if background else None
        # a refresh re-scores many rounds' images: embed them a chunk at a time (with no web
        # sample the candidates are their own, so they stay one chunk)
        step = SCORE_CHUNK if web is not None else len(candidates)
        out: dict[str, float] = {}
        for start in range(0, len(candidates), step):
            part = candidates[start:start + step]
            cand_emb = self.embed([p for _, p, _ in part])
            rewards = scored_rewards(cand_emb, target_emb, cand_emb if web is None else web,
                                     self.cfg.reward)
            out.update((sha, float(r)) for (sha, _, _), r in zip(part, rewards))
        return out

    def train_round(self, round_: int, images: RoundImages) -> dict:
        """MUG steps on a mix of target, this round's candidates and replay; then k-NN.
        Under torchrun every rank trains the round together (rank 0 tells the others first);
        the stats then hold `ranks` and each rank's `weights` digest (equal: one model)."""
        started = time.monotonic()
        if self.ranks is None:
            stats = self._train(round_, images)
        else:
            if self.ranks.is_main:
                self.ranks.send(("train", round_, images))
            else:   # its own masks and crops, the same again on a resume
                torch.manual_seed(ddp.rank_seed(self.cfg.run.seed, round_, self.ranks.rank))
            with self.ranks.collective():
                stats = self._train(round_, images)
                stats["ranks"] = self.ranks.world
                stats["weights"] = self.ranks.gather(ddp.weights_digest(self.model.state_dict()))
        stats["knn_acc"] = None if self.follower else self.knn_accuracy()
        stats["seconds"] = time.monotonic() - started
        return stats

    def _train(self, round_: int, images: RoundImages) -> dict:
        candidates = [ImageRecord(p, c or None) for _, p, c in images.candidates]
        replay = [ImageRecord(p, c or None) for _, p, c in images.replay]
        batches = mixed_batches(self.target, candidates, replay, self.cfg, self.tokenizer,
                                self.image_size, seed=self.cfg.run.seed * 100_003 + round_)
        stats = self.trainer.train_steps(self.cfg.train.steps_per_round,
                                         self._counted(batches, round_))
        if self.progress is not None and stats["steps"]:
            self.progress.trained_step()    # the last step (its batches were drawn before it ran)
        del batches
        return stats

    def _counted(self, batches, round_: int):
        """The batches, ticking the progress bar once an optimiser step's worth is drawn."""
        if self.progress is None:
            yield from batches
            return
        self.progress.train_started(round_, self.cfg.train.steps_per_round)
        for i, batch in enumerate(batches):
            if i and i % self.cfg.train.grad_accum == 0:
                self.progress.trained_step()
            yield batch

    def embed(self, paths: list[str]) -> np.ndarray:
        """Embeddings for rewards: the frozen reward encoder's where there is one (reward.encoder)."""
        model = self.reward_model if self.reward_model is not None else self.model
        return embed_paths(model, paths, self.image_size, batch_size=128, device=self.device)

    def encode_images(self, images: list) -> np.ndarray:
        """PIL images -> unit embeddings [N, D] (the evaluation transform), for evaluation."""
        transform = eval_transform(self.image_size)
        batch = torch.stack([transform(to_rgb(im)) for im in images]).to(self.device)
        return self.model.embed(batch).cpu().numpy().astype(np.float32, copy=False)

    def knn_accuracy(self) -> float | None:
        """A cheap per-round progress signal: k-NN accuracy on (a fixed subset of) the target."""
        if self.eval_target is None:
            return None
        from explorer.model.evaluate import progress_knn

        return float(progress_knn(self.encode_images, self.eval_target, self.cfg.eval))

    def save(self, round_: int, policy_state: dict, report: dict) -> None:
        """latest.pt after every round (atomic); a numbered copy every N rounds."""
        extra = {"round": round_, "policy": json.dumps(policy_state), "report": json.dumps(report)}
        self.trainer.save_checkpoint(self.run.latest_checkpoint, extra={"explore": extra})
        every = self.cfg.run.checkpoint_every
        if every and (round_ + 1) % every == 0:
            self.trainer.save_checkpoint(self.run.round_checkpoint(round_), extra={"explore": extra})
        self.rounds_done = round_ + 1


def follow(ranks: ddp.Ranks) -> int:
    """A rank other than 0 for the whole run: build a learner when rank 0 builds its own, train
    each round rank 0 trains, return at its stop (explorer/model/ddp.py). Writes nothing.
    Returns the rounds trained."""
    learner, rounds = None, 0
    while True:
        kind, *args = ranks.receive()
        if kind == "stop":
            return rounds
        if kind == "start":
            cfg, target_train, checkpoint = args
            learner = Learner(cfg, RunDir(cfg.run.run_dir), target_train,
                              checkpoint=Path(checkpoint), ranks=ranks)
        elif kind == "train":
            round_, images = args
            learner.train_round(round_, images)
            rounds += 1
        else:
            raise RuntimeError(f"rank {ranks.rank}: unknown message {kind!r} from rank 0")

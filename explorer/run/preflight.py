"""Before a run's first round: which training values it gets (the cpu or gpu preset) and, on a
CPU, whether a round fits its budget.

The config's own training values are sized for a GPU; on a CPU such a round of a ViT takes
longer than most budgets. `explore run` applies `CPU_PRESET` under
the user's options when `--preset cpu` is asked, or `auto` finds no GPU; the run says which
preset it got. On a CPU it then times a few training steps and image embeddings of its own model
and says how long a round should take, and what to change when too few rounds fit the budget.
It never stops a run: a user may know better.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from explorer.config import CPU_PRESET, Config, preset_values, shown

PROBE_BATCH = 8          # images in the first probe pass; the round's cost is scaled from the passes
PROBE_PASSES = 3         # timed passes, after the sizing ones (allocations, lazy init); the fastest counts
PROBE_MIN_PASS_S = 1.0   # the probe's batch doubles (up to the round's own) while a pass is shorter:
                         # a small model's short passes are mostly torch's per-op and thread wake-up
                         # costs, which a round's larger batches spread over more images
PROBE_MAX_EMBED = 64     # the embedding probe's batch at most (scoring's are larger; per image, alike)
PROBE_CAPTION_TOKENS = 12  # real tokens of a probe caption (the rest padding): a web title's length.
                         # The caption loss scores the vocabulary at real tokens only, so a probe of
                         # all model.max_caption_tokens (32) real timed ~3x the step the loop takes
                         # on titles such as the sandbox's (8 tokens median, 12 at the 90th percentile)
ENOUGH_ROUNDS = 10       # a budget-only run (run.rounds=0) that holds fewer rounds gets a warning:
                         # the policy steers by what earlier rounds paid, so it needs several


def choose_preset(cfg: Config) -> str:
    """run.preset as a run applies it: "auto" is cpu unless the run's device is a GPU (run.device
    auto: one this machine has)."""
    if cfg.run.preset != "auto":
        return cfg.run.preset
    device = cfg.run.device
    if device == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return "gpu" if device.startswith("cuda") else "cpu"


def preset_line(cfg: Config) -> str:
    """One line at the start of a run: the preset it got and its training values as they stand
    (after --set), and how to change them."""
    fields = list(preset_values(CPU_PRESET))
    values = ", ".join(f"{name}={shown(cfg, name)}" for name in fields)
    if cfg.run.preset == "cpu":
        return (f"preset cpu (CPU-sized training): {values}; "
                "--preset gpu keeps the config's own, --set changes any")
    return f"preset {cfg.run.preset}: {values}; --preset cpu for CPU-sized training, --set changes any"


# ---- how long a round takes on a CPU -------------------------------------------------------

@dataclass(frozen=True)
class RoundWork:
    """What one round asks of the model: images through a training step (forward and backward)
    and images only embedded (candidates scored, the target's train images they are scored
    against, the web sample, the k-NN check)."""
    train_images: int
    embed_images: int


@dataclass(frozen=True)
class RoundEstimate:
    work: RoundWork
    train_s_per_image: float
    embed_s_per_image: float

    @property
    def train_s(self) -> float:
        return self.work.train_images * self.train_s_per_image

    @property
    def embed_s(self) -> float:
        return self.work.embed_images * self.embed_s_per_image

    @property
    def seconds(self) -> float:
        return self.train_s + self.embed_s


def round_work(cfg: Config, target_train: int, knn_images: int) -> RoundWork:
    """A round's images, at most: every search result of every query is taken as kept (the
    crawl drops some), and the k-NN check's `knn_images` are the target's, capped by eval.*."""
    t = cfg.train
    candidates = cfg.crawl.queries_per_round * cfg.crawl.results_per_query
    # the web sample: images kept in the first round with any
    background = min(cfg.reward.background_images, candidates) \
        if cfg.reward.centre == "web" or cfg.reward.contrast else 0
    return RoundWork(train_images=t.steps_per_round * t.grad_accum * t.batch_size,
                     embed_images=candidates + target_train + background + knn_images)


def knn_images(cfg: Config, target) -> int:
    """Images the per-round k-NN check embeds: a capped sample of the target's train and test."""
    if target is None or not target.labelled or target.test is None:
        return 0
    return (min(len(target.train), cfg.eval.progress_max_train)
            + min(len(target.test), cfg.eval.progress_max_test))


def time_training(model, image_size: int, vocab_size: int, caption_tokens: int,
                  batch: int = PROBE_BATCH, max_batch: int | None = None) -> float:
    """Seconds per image of a training pass (forward and backward; the optimiser's step, a
    small share of a step on a CPU, left out) of `model` on random images [B, 3, S, S] and
    captions of PROBE_CAPTION_TOKENS real tokens padded to `caption_tokens`; B grows from
    `batch` to at most `max_batch` (`sized_passes`). The model's weights, mode and the random
    state are left as they were: no step is taken and the gradients are dropped."""
    was_training = model.training
    most = max(batch, max_batch or batch)
    with torch.random.fork_rng(devices=[]):
        imgs = torch.randn(most, 3, image_size, image_size)
        tokens = torch.randint(vocab_size, (most, caption_tokens))
        token_mask = torch.zeros(most, caption_tokens, dtype=torch.long)
        token_mask[:, :min(caption_tokens, PROBE_CAPTION_TOKENS)] = 1
        model.train()
        try:
            return sized_passes(lambda b: model(imgs[:b], tokens[:b], token_mask[:b])["loss"].backward(),
                                batch, most)
        finally:
            model.zero_grad(set_to_none=True)
            model.train(was_training)


def time_embedding(model, image_size: int, batch: int = PROBE_BATCH, max_batch: int | None = None) -> float:
    """Seconds per image of `model.embed` (every patch, no gradients), as scoring runs it."""
    most = max(batch, max_batch or batch)
    with torch.random.fork_rng(devices=[]):
        imgs = torch.randn(most, 3, image_size, image_size)
    with torch.no_grad():
        return sized_passes(lambda b: model.embed(imgs[:b]), batch, most)


def sized_passes(one_pass, batch: int, max_batch: int) -> float:
    """Seconds per image of `one_pass(b)` (a pass over b images): untimed passes first (they warm
    what the passes allocate), the batch doubling while a pass takes under PROBE_MIN_PASS_S and
    is below `max_batch`; then the fastest of PROBE_PASSES timed passes at that batch. The run's
    own start competes for the CPU while the probe runs, and the fastest pass is the one it
    disturbed least."""
    while True:
        started = time.perf_counter()
        one_pass(batch)
        if time.perf_counter() - started >= PROBE_MIN_PASS_S or batch >= max_batch:
            break
        batch = min(max_batch, 2 * batch)
        if batch == max_batch:   # the last size: its first pass is timed below, after a warm one
            one_pass(batch)
            break
    best = float("inf")
    for _ in range(PROBE_PASSES):
        started = time.perf_counter()
        one_pass(batch)
        best = min(best, time.perf_counter() - started)
    return best / batch


def estimate_round(cfg: Config, learner, target) -> RoundEstimate:
    """How long a round of this run should take on the CPU, from timed passes of the learner's
    own model (and its reward encoder, which does the scoring where there is one)."""
    size = learner.image_size
    scorer = learner.reward_model if learner.reward_model is not None else learner.model
    work = round_work(cfg, len(learner.target_train), knn_images(cfg, target))
    return RoundEstimate(
        work,
        train_s_per_image=time_training(learner.model, size, learner.tokenizer.vocab_size,
                                        cfg.model.max_caption_tokens, max_batch=cfg.train.batch_size),
        embed_s_per_image=time_embedding(scorer, size, max_batch=PROBE_MAX_EMBED))


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def rounds_wanted(cfg: Config) -> int:
    """The rounds the budget should hold: the run's cap, or enough for the policy to steer."""
    return cfg.run.rounds or ENOUGH_ROUNDS


def estimate_line(cfg: Config, est: RoundEstimate) -> tuple[str, bool]:
    """(one line, whether it is a warning): the round's estimate on the CPU and how many rounds
    the budget holds; when fewer than `rounds_wanted`, what would make a round shorter."""
    budget_s = cfg.run.hours * 3600
    fits = budget_s / est.seconds if est.seconds > 0 else float("inf")
    t = cfg.train
    line = (f"on cpu a round of {cfg.model.name} takes about {duration(est.seconds)}: training "
            f"{t.steps_per_round} steps x {t.batch_size * t.grad_accum} images {duration(est.train_s)}, "
            f"embedding up to {est.work.embed_images:,} images (candidates, target, k-NN) "
            f"{duration(est.embed_s)}")
    wanted = rounds_wanted(cfg)
    if fits >= wanted:
        return f"{line}; the {cfg.run.hours:g} h budget holds about {int(fits)} rounds", False
    held = "not one round" if fits < 1 else f"about {int(fits)} of the {wanted} rounds " + \
        ("asked" if cfg.run.rounds else "a policy needs to steer")
    return f"{line}; the {cfg.run.hours:g} h budget holds {held}: {shorter_round(cfg, est)}", True


def shorter_round(cfg: Config, est: RoundEstimate) -> str:
    """What to change, biggest cost first: the CPU preset, a smaller model, fewer images."""
    fixes = []
    if cfg.run.preset != "cpu":
        fixes.append("--preset cpu (CPU-sized training)")
    if cfg.model.name != "tiny-64":
        fixes.append("--model tiny-64")
    if est.embed_s > est.train_s:
        fixes.append("fewer images a round (--set crawl.queries_per_round=N, eval.progress_max_train=N)")
    else:
        fixes.append("fewer steps (--set train.steps_per_round=N)")
    return "try " + ", ".join(fixes) + ", or more --hours"


def say_round_estimate(cfg: Config, learner, target, console) -> None:
    """On a CPU, print the round's estimate (a warning when the budget holds too few rounds).
    A probe that fails says so and the run goes on."""
    if learner.device.type != "cpu":
        return
    from rich.text import Text

    try:
        line, warn = estimate_line(cfg, estimate_round(cfg, learner, target))
    except (RuntimeError, MemoryError) as e:   # an allocation the machine cannot make
        line, warn = f"cannot time a round of {cfg.model.name} on the CPU: {type(e).__name__}: {e}", True
    console.print(Text(f"warning: {line}" if warn else line, style="yellow" if warn else ""),
                  highlight=False, soft_wrap=True)

"""Every default of a run, in one place.

`Config` is one dataclass of sections. It is written to `RUN_DIR/config.toml` when a run
starts and read back by `explore resume`. Any field can be overridden from the CLI with
`--set section.field=value` (see `apply_overrides`).
"""
from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w


@dataclass
class RunConfig:
    target: str = "sandbox-flowers"       # flowers102, food101, ..., folder:PATH, sandbox-flowers
    hours: float = 30.0                   # wall-clock budget, counted across resumes
    rounds: int = 0                       # stop after this many rounds; 0 = budget only
    max_images: int = 0                   # stop once this many images are kept; 0 = no cap
    run_dir: str = "runs/latest"
    cache_dir: str = ""                   # "" = RUN_DIR/cache; share one across runs to reuse images
    data_root: str = "~/.cache/explore/data"
    seed: int = 0
    device: str = "auto"                  # auto, cpu, cuda, cuda:1
    checkpoint_every: int = 5             # keep a numbered checkpoint every N rounds (latest.pt always)


@dataclass
class CrawlConfig:
    engine: str = "ddgs"                  # ddgs, sandbox, corpus:PATH
    queries_per_round: int = 256          # Internet Explorer's value
    results_per_query: int = 100
    concurrency: int = 128                # requests in flight, all hosts together
    per_host: int = 8                     # requests in flight to one host
    politeness_delay_s: float = 0.0       # pause between two requests to one host
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 15.0
    total_timeout_s: float = 60.0         # one request, all of it (a slow drip cannot hold a slot)
    max_bytes: int = 20_000_000           # byte cap per response, enforced while streaming
    max_redirects: int = 5
    retries: int = 2                      # for 429 and 5xx only
    retry_backoff_s: float = 1.0          # first retry's pause; doubles, with jitter
    user_agent: str = "explore-crawler/0.1 (research image crawler; honours X-Robots-Tag noai)"
    allow: list[str] = field(default_factory=list)  # host:port pairs allowed although not public
    search_interval_s: float = 3.0        # at most one real-engine search per this many seconds
    search_retries: int = 5
    search_backoff_s: float = 2.0         # first backoff; doubles, with jitter
    search_backoff_max_s: float = 60.0    # a single backoff never waits longer than this
    search_timeout_s: float = 30.0        # one search attempt, everything included
    search_region: str = "us-en"          # ddgs region
    search_safesearch: str = "moderate"   # ddgs: on, moderate, off
    search_backend: str = "auto"          # ddgs image backends: auto, duckduckgo, bing (comma list)
    corpus_cache_dir: str = "~/.cache/explore/corpus"  # caption embeddings of corpus:PATH engines
    corpus_text_model: str = "all-MiniLM-L6-v2"        # embeds corpus captions and queries
    image_size: int = 256                 # stored images: shorter side resized to this
    min_side: int = 32                    # smaller originals are rejected (too_small)
    max_aspect: float = 5.0               # longer/shorter side beyond this is rejected
    max_pixels: int = 64_000_000          # decompression-bomb limit (an error, not a warning)
    jpeg_quality: int = 90
    near_dup_threshold: float = 0.95      # cosine similarity at or above which an image is a near-copy
    leak_threshold: float = 0.92          # near-copies of target *test* images are dropped at this
    cache_max_bytes: int = 50_000_000_000
    pool: str = "process"                 # process: fetch+prepare in worker processes, each with its own GIL;
                                          # thread: in this process, threads prepare (explorer/fetchers.py)
    workers: int = 0                      # worker processes (0 = one per core) or preparing threads (0 = 2 per core)
    db_batch: int = 256                   # attempts committed per transaction


@dataclass
class ModelConfig:
    name: str = "vit-b16"                 # tiny-64 (CPU), vit-s16, vit-b16
    init: str = "scratch"                 # scratch, timm:MODEL_NAME, file:PATH
    mask_ratio: float = 0.75
    caption_weight: float = 1.0           # lambda in: pixel MSE + lambda * caption CE
    max_caption_tokens: int = 32
    norm_pix_loss: bool = True
    drop_path: float = 0.0                # stochastic depth in the encoder (MAE pre-training: 0)


@dataclass
class TrainConfig:
    batch_size: int = 256                 # images per micro-batch per process
    steps_per_round: int = 500
    lr: float = 1.5e-4                    # base lr for batch 256, as MAE: scaled by
                                          # batch_size * grad_accum * world_size / 256
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 2000
    total_steps: int = 100_000            # cosine schedule length
    grad_clip: float = 1.0
    grad_accum: int = 1                   # micro-batches per optimiser step
    target_share: float = 0.25            # batch shares: target images, this round's candidates,
    candidate_share: float = 0.5          # and replay of earlier high-reward images
    replay_share: float = 0.25
    replay_size: int = 50_000
    workers: int = 4
    bf16: bool = True                     # autocast on GPU
    compile: bool = False
    min_lr_ratio: float = 0.0             # cosine decays lr to this share of its peak
    crop_scale_min: float = 0.2           # RandomResizedCrop scale range (MAE: 0.2-1.0)


@dataclass
class RewardConfig:
    k: int = 15                           # target-train neighbours per candidate
    centre: str = "web"                   # cosines about the target/web midpoint ("web") or raw ("none")
    background_images: int = 512          # the web sample behind "web": kept images of the first round
    contrast: bool = True                 # minus the mean cosine to the k nearest web-sample images (hubness)
    floor: float = 0.0                    # reward of a query that yields nothing usable ...
    floor_mode: str = "round_min"         # ... "fixed": that value; "round_min": the round's lowest
                                          # query reward (on the encoder's scale, so that a failed
                                          # query ranks with the worst, not far below all of them)


@dataclass
class PolicyConfig:
    name: str = "gp"                      # gp, ucb, random, oracle
    vocab: str = "imagenet21k"            # imagenet21k, wordnet, file:PATH, sandbox
    descriptors: str = ""                 # file of words combined with concepts; "" = none
    descriptor_share: float = 0.0         # share of queries that get a descriptor
    temperature: float = 0.15             # tau in p(c) ∝ exp(z(c)/tau), z = r̂ z-scored over the vocab
    epsilon: float = 0.1                  # share of uniformly random concepts
    ucb_beta: float = 1.0                 # ucb policy: score = r̂ + beta * posterior std
    max_observations: int = 4000          # GP conditioned on at most this many concepts (half newest, half best)
    gp_fit_points: int = 500              # GP hyper-parameters fitted on a random subset this big (speed)
    gp_restarts: int = 0                  # extra random restarts of the hyper-parameter optimiser
    text_model: str = "all-MiniLM-L6-v2"
    embedding_cache: str = "~/.cache/explore/concepts"  # concept embeddings, one file per (vocab, model)


@dataclass
class SandboxConfig:
    seed: int = 0
    profile: str = "none"                 # none, realistic, hostile
    test_per_class: int = 20              # sandbox targets' test images a class (more: steadier accuracies)
    host: str = "127.0.0.1"
    port: int = 0                         # 0 = any free port
    stall_s: float = 30.0                 # how long a stalled response stays silent
    oversize_bytes: int = 25_000_000      # body length of the oversize faults (above crawl.max_bytes)
    gzip_bomb_bytes: int = 30_000_000     # inflated length of the gzip-bomb fault
    forbidden_hosts: tuple[str, ...] = ("127.0.0.2", "::1")  # loopback listeners off the allow-list
    cache_bytes: int = 200_000_000        # encoded images the server keeps in memory (LRU)


@dataclass
class EvalConfig:
    label_fractions: tuple[float, ...] = (1.0, 0.1)  # all labels and 10%, as INTERN reports
    knn_k: int = 20
    knn_temperature: float = 0.07         # DINO's weighted k-NN: votes weigh exp(cosine / T)
    probe_c: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)  # logistic-regression C sweep
    val_share: float = 0.2                # share of the labelled train set that picks C
    max_iter: int = 1000                  # lbfgs iterations per probe fit
    seed: int = 0                         # label subsets and the validation split
    batch_size: int = 256                 # images per encode_fn call
    workers: int = 4                      # image-decoding processes for feature extraction
    progress_max_train: int = 5000        # per-round k-NN progress signal: train images used
    progress_max_test: int = 2000         # and test images used


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    crawl: CrawlConfig = field(default_factory=CrawlConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Config":
        cfg = cls()
        for section, values in data.items():
            if not hasattr(cfg, section):
                raise ValueError(f"unknown config section [{section}]")
            for key, value in values.items():
                _set_field(getattr(cfg, section), section, key, value)
        return cfg

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(tomli_w.dumps(self.to_dict()))
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> "Config":
        with open(path, "rb") as f:
            return cls.from_dict(tomllib.load(f))


def _field_type(section_obj, key: str):
    hints = typing.get_type_hints(type(section_obj))
    return hints[key]


def _coerce(tp, value):
    """Convert a TOML value or a CLI string to the field's declared type."""
    origin = typing.get_origin(tp)
    if tp is bool:
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"not a boolean: {value!r}")
        return bool(value)
    if tp in (int, float, str):
        return tp(value)
    if origin in (list, tuple):
        (inner, *_) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        items = [_coerce(inner, v.strip() if isinstance(v, str) else v) for v in value]
        return tuple(items) if origin is tuple else items
    return value


def _set_field(section_obj, section: str, key: str, value) -> None:
    if key not in {f.name for f in dataclasses.fields(section_obj)}:
        raise ValueError(f"unknown config field {section}.{key}")
    setattr(section_obj, key, _coerce(_field_type(section_obj, key), value))


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply `section.field=value` strings (from `--set`) in order."""
    for item in overrides:
        name, sep, value = item.partition("=")
        section, dot, key = name.strip().partition(".")
        if not sep or not dot or not hasattr(cfg, section):
            raise ValueError(f"expected section.field=value, got {item!r}")
        _set_field(getattr(cfg, section), section, key, value.strip())
    return cfg


# Small values for the offline sandbox web on a CPU (DESIGN.md §2: "the sandbox uses small
# values"). Applied under the user's own --config and --set, so every one can be overridden.
SANDBOX_PRESET = [
    "crawl.engine=sandbox",
    "crawl.queries_per_round=16",
    "crawl.results_per_query=24",
    "crawl.search_interval_s=0",
    "crawl.search_backoff_s=0.05",
    "crawl.search_backoff_max_s=1",
    "crawl.image_size=80",
    "crawl.concurrency=64",
    "crawl.per_host=64",
    "crawl.connect_timeout_s=2",
    "crawl.read_timeout_s=10",
    "model.name=tiny-64",
    "train.batch_size=32",
    "train.steps_per_round=30",
    "train.lr=1e-3",
    "train.warmup_steps=30",
    "train.total_steps=3000",
    "train.workers=0",
    "eval.workers=0",
    "train.replay_size=2000",
    "reward.k=10",
    "policy.vocab=sandbox",
    "run.checkpoint_every=0",
    "run.device=cpu",
]


def is_sandbox_target(target: str) -> bool:
    return target.startswith("sandbox-")

"""Every default of a run, in one place.

`Config` is one dataclass of sections. It is written to `RUN_DIR/config.toml` when a run
starts and read back by `explore resume`. Any field can be overridden from the CLI with
`--set section.field=value` (see `apply_overrides`). Every field has a rule in `RULES` (its
type and allowed range or form), checked on load and on --set: a bad value is a ConfigError,
one line naming the field, the value and what is allowed.
"""
from __future__ import annotations

import copy
import dataclasses
import ipaddress
import math
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from explorer.errors import UserError


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
    preset: str = "auto"                  # training values sized for: gpu (these defaults), cpu (CPU_PRESET),
                                          # auto (cpu when the run has no GPU); `explore run` applies it
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
    search_concurrency: int = 8           # a round's searches in flight at once (then each one's fetches)
    search_retries: int = 5
    search_backoff_s: float = 2.0         # first backoff; doubles, with jitter
    search_backoff_max_s: float = 60.0    # a single backoff never waits longer than this
    search_timeout_s: float = 30.0        # one search attempt, everything included
    search_reasks: int = 3                # a failed search is asked again in later rounds this often
    search_fail_streak: int = 10          # failed searches in a row that make the engine "down"
    search_pause_s: float = 30.0          # first pause of the crawl while the engine is down; doubles
    search_pause_max_s: float = 600.0     # a single pause never waits longer than this
    search_patience_s: float = 3600.0     # downtime after which the run stops (exit 3, resumable)
    search_region: str = "us-en"          # ddgs region
    search_safesearch: str = "moderate"   # ddgs: on, moderate, off
    search_backend: str = "auto"          # ddgs image backends: auto, duckduckgo, bing (comma list)
    corpus_cache_dir: str = "~/.cache/explore/corpus"  # caption embeddings of corpus:PATH engines
    corpus_text_model: str = "all-MiniLM-L6-v2"        # embeds corpus captions and queries
    corpus_allow_outside: bool = False    # read corpus files outside its folder (absolute, ../, symlinks out)
    image_size: int = 256                 # stored images: shorter side resized to this
    min_side: int = 32                    # smaller originals are rejected (too_small)
    max_aspect: float = 5.0               # longer/shorter side beyond this is rejected
    max_pixels: int = 64_000_000          # decompression-bomb limit (an error, not a warning)
    jpeg_quality: int = 90
    near_dup_threshold: float = 0.95      # cosine similarity at or above which an image is a near-copy
    leak_threshold: float = 0.92          # near-copies of target *test* images are dropped at this
    leak_hamming: int = 230               # ... or when one of its copy hashes is within this many of 1024 bits
                                          # of a test image's view (a candidate; explorer/crawl/decontam.py, calibrated
                                          # by bench/decontam.py; -1: off, no copy hashes made) ...
    leak_mismatch: float = 0.05           # ... and, verified, disagrees with it on at most this share of its detail
    cache_max_bytes: int = 50_000_000_000
    pool: str = "process"                 # process: fetch+prepare in worker processes, each with its own GIL;
                                          # thread: in this process, threads prepare (explorer/crawl/fetchers.py);
                                          # ray: Ray actors, on a cluster (explorer/crawl/ray_fetcher.py, the ray extra)
    workers: int = 0                      # worker processes (0 = one per core), preparing threads (0 = 2 per core)
                                          # or Ray actors (0 = one per CPU of the cluster)
    ray_address: str = ""                 # crawl.pool=ray: "" = start a local Ray, auto, or HOST:PORT of a head
    prepare_timeout_s: float = 5.0        # CPU seconds one image's decode+resize may take; past it: decode_timeout
    db_batch: int = 256                   # attempts committed per transaction


@dataclass
class ModelConfig:
    name: str = "vit-b16"                 # tiny-64 (CPU), vit-s16, vit-b16
    init: str = "auto"                    # auto (see resolve_init), scratch, timm:MODEL_NAME, file:PATH
    mask_ratio: float = 0.75
    caption_weight: float = 1.0           # lambda in: pixel MSE + lambda * caption CE
    max_caption_tokens: int = 32
    norm_pix_loss: bool = True
    drop_path: float = 0.0                # stochastic depth in the encoder (MAE pre-training: 0)


@dataclass
class TrainConfig:
    batch_size: int = 256                 # images per micro-batch, all processes together (torchrun:
                                          # each trains batch_size / world_size of them)
    steps_per_round: int = 500
    lr: float = 1.5e-4                    # base lr for batch 256, as MAE: scaled by
                                          # batch_size * grad_accum / 256
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 2000
    total_steps: int = 100_000            # cosine schedule length
    grad_clip: float = 1.0
    grad_accum: int = 1                   # micro-batches per optimiser step
    target_share: float = 0.25            # batch shares: target images, this round's candidates,
    candidate_share: float = 0.5          # and replay of earlier high-reward images
    replay_share: float = 0.25
    replay_size: int = 50_000             # replay pool: drawn from earlier rounds' images with
    replay_temperature: float = 0.5       # p ∝ exp(z/τ), z = the image's fresh reward z-scored
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
    refresh_every: int = 5                # every N rounds re-score earlier rounds' images with the
                                          # current encoder (0 = never): GP, replay and `explore
    refresh_per_query: int = 32           # rewards` use fresh values; images re-scored per query
    encoder: str = "model"                # what embeds for rewards: the encoder being trained ("model"), or
                                          # a frozen one of model.name's shape: scratch, timm:NAME, file:PATH
                                          # (a from-scratch encoder's rewards follow colour, not content)


@dataclass
class PolicyConfig:
    name: str = "gp"                      # gp, ucb, random, oracle
    vocab: str = "imagenet21k"            # imagenet21k, wordnet, file:PATH, sandbox
    descriptors: str = ""                 # file of words combined with concepts; "" = none
    descriptor_share: float = 0.0         # share of queries that get a descriptor
    concept_descriptors: str = ""         # file of `concept<TAB>descriptor` lines (file: vocabs); "" = none
    class_names: bool = True              # the first round drawn by text similarity to the target's class names
                                          # (false, or a target without names: uniformly, blind)
    class_names_share: float = 1.0        # of the first round, the share drawn near the names; the rest blind
    reask_share: float = 0.5              # most of a round's queries that re-ask concepts that paid off
    max_page: int = 5                     # results pages a concept is asked for at most
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
    profile: str = "none"                 # none, realistic, hostile; throttled, down (searches only)
    test_per_class: int = 20              # sandbox targets' test images a class (more: steadier accuracies)
    looks: str = "family"                 # family: backdrop and palette give the family away; shared: only
                                          # shape and texture do (explorer/sandbox/world.py)
    host: str = "127.0.0.1"
    port: int = 0                         # 0 = any free port
    stall_s: float = 30.0                 # how long a stalled response stays silent
    oversize_bytes: int = 25_000_000      # body length of the oversize faults (above crawl.max_bytes)
    gzip_bomb_bytes: int = 30_000_000     # inflated length of the gzip-bomb fault
    forbidden_hosts: tuple[str, ...] = ("127.0.0.2", "::1")  # loopback listeners off the allow-list
    cache_bytes: int = 200_000_000        # encoded images the server keeps in memory (LRU)
    page_size: int = 0                    # results a search answers at most, as real engines page them (Bing 35); 0 = as many as asked
    page_decay: float = 0.75              # with page_size: page p holds page_decay**(p-1) of page 1's on-topic share
    named_titles: float = 0.95            # share of titles that name the picture's concept (the most: the rest
                                          # name another concept); lower: the rest name the family only, a
                                          # file, boilerplate or nothing, as much alt text does (search.py)


@dataclass
class EvalConfig:
    label_fractions: tuple[float, ...] = (1.0, 0.1)  # all labels and 10%, as INTERN reports
    knn_k: int = 20
    knn_temperature: float = 0.07         # DINO's weighted k-NN: votes weigh exp(cosine / T)
    probe_c: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)  # logistic-regression C sweep
    probe_folds: int = 5                  # stratified folds of the labelled train set that pick C
    max_iter: int = 1000                  # lbfgs iterations per probe fit
    seed: int = 0                         # label subsets and the probe's folds
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
    def from_dict(cls, data: dict, base: "Config | None" = None) -> "Config":
        """`data`'s fields (a parsed config.toml) over `base`'s (default: every default). A
        RETIRED field is skipped: the config.toml of a run made before it went still loads."""
        cfg = copy.deepcopy(base) if base is not None else cls()
        for section, values in data.items():
            if section not in SECTIONS:
                raise ConfigError(f"unknown config section [{section}]; have {', '.join(SECTIONS)}")
            if not isinstance(values, dict):
                raise ConfigError(f"[{section}] must be a table of fields, not {values!r}")
            for key, value in values.items():
                if f"{section}.{key}" not in RETIRED:
                    _set_field(getattr(cfg, section), section, key, value)
        return validate(cfg)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(tomli_w.dumps(self.to_dict()))
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path, base: "Config | None" = None) -> "Config":
        """Read a config.toml (over `base`, see from_dict); a bad value is a ConfigError that
        names the file too."""
        with open(path, "rb") as f:
            try:
                return cls.from_dict(tomllib.load(f), base)
            except tomllib.TOMLDecodeError as e:
                raise ConfigError(f"{path}: not valid TOML: {e}") from None
            except ConfigError as e:
                raise ConfigError(f"{path}: {e}") from None


SECTIONS = tuple(f.name for f in dataclasses.fields(Config))


def _field_type(section_obj, key: str):
    hints = typing.get_type_hints(type(section_obj))
    return hints[key]


def _coerce(tp, value):
    """Convert a TOML value or a CLI string to the field's declared type. A value that does
    not convert is returned as it is: its field's rule then refuses it with the allowed range."""
    origin = typing.get_origin(tp)
    if tp is bool:
        if isinstance(value, str):
            return {"1": True, "true": True, "yes": True, "on": True,
                    "0": False, "false": False, "no": False, "off": False}.get(value.lower(), value)
        return value
    if tp in (int, float):
        if isinstance(value, str):
            try:
                return tp(value)
            except ValueError:
                return value
        # a TOML 2.5 for an int field is refused, never truncated; an int is a fine float
        return float(value) if tp is float and type(value) is int else value
    if origin in (list, tuple):
        (inner, *_) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            return value
        items = [_coerce(inner, v.strip() if isinstance(v, str) else v) for v in value]
        return tuple(items) if origin is tuple else items
    return value


# Fields that existed once: a saved config.toml that has one still loads (the value is not
# used); setting one (--set) is an error that says what replaced it.
RETIRED = {
    "eval.val_share": "the probe's C is chosen by cross-validation now: eval.probe_folds",
}


def _set_field(section_obj, section: str, key: str, value) -> None:
    if f"{section}.{key}" in RETIRED:
        raise ConfigError(f"config field {section}.{key} is retired: {RETIRED[f'{section}.{key}']}")
    if key not in {f.name for f in dataclasses.fields(section_obj)}:
        raise ConfigError(f"unknown config field {section}.{key}")
    typed = _show(value) if isinstance(value, str) else None
    value = _coerce(_field_type(section_obj, key), value)
    check_field(f"{section}.{key}", value, typed)
    setattr(section_obj, key, value)


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply `section.field=value` strings (from `--set`) in order."""
    for item in overrides:
        name, sep, value = item.partition("=")
        section, dot, key = name.strip().partition(".")
        if not sep or not dot or section not in SECTIONS:
            raise ConfigError(f"expected section.field=value, got {item!r}")
        _set_field(getattr(cfg, section), section, key, value.strip())
    return validate(cfg)


# Training values sized for a CPU, so that a round trains in minutes, not hours: `explore run
# --preset cpu`, or `auto` on a machine without a GPU (explorer/run/preflight.py chooses). The
# defaults above are the gpu preset. Applied under the run's options and --set, so every one can
# be overridden.
CPU_PRESET = [
    "train.batch_size=32",
    "train.steps_per_round=30",
    "train.lr=1e-3",
    "train.warmup_steps=30",
    "train.total_steps=3000",
    "train.replay_size=2000",
]
PRESETS = {"cpu": CPU_PRESET, "gpu": []}


# Small values for the offline sandbox web on a CPU, so that a demo round takes seconds.
# Applied under the user's own --config and --set, so every one can be overridden.
SANDBOX_PRESET = [
    "crawl.engine=sandbox",
    "crawl.queries_per_round=16",
    "crawl.results_per_query=24",
    "crawl.search_interval_s=0",
    "crawl.search_backoff_s=0.05",
    "crawl.search_backoff_max_s=1",
    "crawl.search_pause_s=0.5",
    "crawl.search_pause_max_s=5",
    "crawl.search_patience_s=30",
    "crawl.image_size=80",
    "crawl.concurrency=64",
    "crawl.per_host=64",
    "crawl.connect_timeout_s=2",
    "crawl.read_timeout_s=10",
    "model.name=tiny-64",
    *CPU_PRESET,
    "train.lr=3e-3",       # over the cpu preset's: tiny-64 was under-stepped at 1e-3 (bench/ablate.py lr-high)
    "model.mask_ratio=0.5",  # over MAE's 0.75: tiny-64 learns more a step here, and no less at equal compute (bench/ablate.py)
    "model.caption_weight=3",  # over 1: what a crawl teaches comes through its captions (bench/e2e.py, bench/ablate.py caption-x1)
    "train.workers=0",
    "eval.workers=0",
    "reward.k=10",
    "policy.vocab=sandbox",
    "run.checkpoint_every=0",
    "run.device=cpu",
]


def is_sandbox_target(target: str) -> bool:
    return target.startswith("sandbox-")


def preset_values(preset: list[str]) -> dict[str, str]:
    """A preset's `section.field=value` items as {field: value}, as they would be typed."""
    return dict(item.split("=", 1) for item in preset)


def get_field(cfg: "Config", name: str):
    """The value of `section.field` in `cfg`."""
    section, _, key = name.partition(".")
    return getattr(getattr(cfg, section), key)


def shown(cfg: "Config", name: str) -> str:
    """The value of `section.field` in `cfg` as it would be typed after --set."""
    return _show(get_field(cfg, name))


# The pretrained start of each encoder on real targets: a self-supervised checkpoint of the
# same architecture where timm has one (Internet Explorer started from a pretrained model).
# Only the encoder is loaded; the pixel and caption decoders start fresh.
PRETRAINED_INIT = {
    "vit-b16": "timm:vit_base_patch16_224.mae",
    "vit-s16": "timm:vit_small_patch16_224.dino",    # timm has no MAE ViT-S; DINO's is SSL too
    "tiny-64": "scratch",                             # no timm checkpoint has its shape
}


def resolve_init(cfg: "Config") -> str:
    """model.init as a run uses it (and records in config.toml): "auto" is scratch for sandbox
    targets (their drawn world is like no photo) and the model's pretrained start otherwise."""
    if cfg.model.init != "auto":
        return cfg.model.init
    if is_sandbox_target(cfg.run.target):
        return "scratch"
    return PRETRAINED_INIT[cfg.model.name]


# ---- what each field accepts -----------------------------------------------------------------
# Every field has a rule, checked on load, on --set and by `validate`, so that a bad value is
# refused in one line (field, value, what is allowed) before a run writes or starts anything.
# The bounds are what the code can honour, not taste: a zero concurrency hangs the crawl, a
# zero timeout is no deadline, a JPEG quality above 100 fails every encode.

class ConfigError(UserError, ValueError):
    """A config value the user must fix: unknown, of the wrong type, or out of range."""


@dataclass(frozen=True)
class Ints:
    lo: int
    hi: int
    why: str = ""                         # said after the range: where the bound comes from

    def problem(self, v) -> str | None:
        if type(v) is int and self.lo <= v <= self.hi:
            return None
        return f"must be an integer from {self.lo:_} to {self.hi:_}" + (f" ({self.why})" if self.why else "")


@dataclass(frozen=True)
class Num:
    lo: float
    hi: float
    above: bool = False                   # lo itself is refused (a zero timeout is no deadline)
    below: bool = False                   # hi itself is refused

    def problem(self, v) -> str | None:
        if type(v) in (int, float) and math.isfinite(v) \
                and (self.lo < v if self.above else self.lo <= v) \
                and (v < self.hi if self.below else v <= self.hi):
            return None
        lo, hi = _number(self.lo), _number(self.hi)
        if not (self.above or self.below):
            return f"must be a number from {lo} to {hi}"
        low = f"above {lo}" if self.above else f"at least {lo}"
        high = f"below {hi}" if self.below else f"at most {hi}"
        return f"must be a number {low} and {high}"


@dataclass(frozen=True)
class Flag:
    def problem(self, v) -> str | None:
        return None if type(v) is bool else "must be true or false"


@dataclass(frozen=True)
class Choice:
    options: tuple[str, ...]

    def problem(self, v) -> str | None:
        return None if v in self.options else f"must be one of: {', '.join(self.options)}"


@dataclass(frozen=True)
class Form:
    """A string of a fixed form: `pattern` must match all of it; `says` is the form in words."""
    pattern: str
    says: str

    def problem(self, v) -> str | None:
        ok = isinstance(v, str) and re.fullmatch(self.pattern, v, flags=re.DOTALL) is not None
        return None if ok else f"must be {self.says}"


@dataclass(frozen=True)
class Loopback:
    """A host on this machine only: the sandbox web and its forbidden listeners never leave it."""

    def problem(self, v) -> str | None:
        if v == "localhost":
            return None
        try:
            ip = ipaddress.ip_address(v)
        except (TypeError, ValueError):
            return "must be localhost or a loopback IP address (127.0.0.0/8, ::1)"
        ip = getattr(ip, "ipv4_mapped", None) or ip
        return None if ip.is_loopback else "must be localhost or a loopback IP address (127.0.0.0/8, ::1)"


@dataclass(frozen=True)
class HostPort:
    """`host:port`, as the crawler's allow-list reads it (an IPv6 host may be bracketed)."""

    def problem(self, v) -> str | None:
        host, _, port = v.rpartition(":") if isinstance(v, str) else ("", "", "")
        ok = bool(host.strip("[]")) and not re.search(r"\s", host) and port.isdigit() \
            and 1 <= int(port) <= 65_535
        return None if ok else "must be HOST:PORT with a port from 1 to 65_535"


@dataclass(frozen=True)
class Each:
    """A list or tuple: between `least` and `most` items, each passing `item`."""
    item: object
    least: int = 0
    most: int = 1000

    def problem(self, v) -> str | None:
        if not isinstance(v, (list, tuple)) or not self.least <= len(v) <= self.most:
            count = (f"exactly {self.least}" if self.least == self.most
                     else f"from {self.least} to {self.most}")
            return f"must be a comma-separated list of {count} items"
        for x in v:
            if (bad := self.item.problem(x)) is not None:
                return f"item {_show(x)} {bad}"
        return None


PATH = Form(r"[^\x00\n]+", "a path (not empty)")
TEXT = Form(r"[^\x00-\x1f\x7f]+", "a non-empty line of text")
NAME = Form(r"[^\s\x00-\x1f]+", "a name (not empty, no spaces)")
SEED = Ints(0, 2**32 - 1, "numpy's seed range")
SHARE = Num(0, 1)
COSINE = Num(0, 1, above=True)
TIMEOUT = Num(0, 3600, above=True)
PAUSE = Num(0, 3600)
WORKERS = Ints(0, 1024, "0 = chosen from the cores")

RULES: dict[str, object] = {
    "run.target": Form(r"folder:[^\x00\n]+|sandbox-[\w-]+|[A-Za-z0-9]([\w-]*[A-Za-z0-9])?",
                       "a dataset name (flowers102, ...), folder:PATH or sandbox-NAME"),
    "run.hours": Num(0, 100_000, above=True),
    "run.rounds": Ints(0, 1_000_000, "0 = budget only"),
    "run.max_images": Ints(0, 10**12, "0 = no cap"),
    "run.run_dir": PATH,
    "run.cache_dir": Form(r"[^\x00\n]*", "a path, or empty for RUN_DIR/cache"),
    "run.data_root": PATH,
    "run.seed": SEED,
    # the form only: whether this machine has the device is pick_device's to say
    "run.device": Form(r"auto|[a-z_]+(:\d+)?", "auto or a torch device such as cpu, cuda or cuda:1"),
    "run.checkpoint_every": Ints(0, 1_000_000, "0 = latest.pt only"),
    "run.preset": Choice(("auto", "cpu", "gpu")),

    "crawl.engine": Form(r"ddgs|sandbox|none|corpus:\s*\S.*", "ddgs, sandbox, none or corpus:PATH"),
    "crawl.queries_per_round": Ints(1, 100_000),
    "crawl.results_per_query": Ints(1, 10_000),
    "crawl.concurrency": Ints(1, 10_000, "each request in flight holds a socket"),
    "crawl.per_host": Ints(1, 10_000),
    "crawl.politeness_delay_s": PAUSE,
    "crawl.connect_timeout_s": TIMEOUT,
    "crawl.read_timeout_s": TIMEOUT,
    "crawl.total_timeout_s": TIMEOUT,
    "crawl.max_bytes": Ints(1_000, 1_000_000_000, "bodies are held in memory"),
    "crawl.max_redirects": Ints(0, 20),
    "crawl.retries": Ints(0, 20),
    "crawl.retry_backoff_s": PAUSE,
    "crawl.user_agent": TEXT,
    "crawl.allow": Each(HostPort()),
    "crawl.search_interval_s": PAUSE,
    "crawl.search_concurrency": Ints(1, 10_000, "each search in flight crawls its results at once"),
    "crawl.search_retries": Ints(0, 100),
    "crawl.search_backoff_s": PAUSE,
    "crawl.search_backoff_max_s": Num(0, 86_400),
    "crawl.search_timeout_s": TIMEOUT,
    "crawl.search_reasks": Ints(0, 100),
    "crawl.search_fail_streak": Ints(1, 100_000),
    "crawl.search_pause_s": PAUSE,
    "crawl.search_pause_max_s": Num(0, 86_400),
    "crawl.search_patience_s": Num(0, 30 * 86_400),
    "crawl.search_region": Form(r"[a-z]{2}-[a-z]{2}", "a ddgs region such as us-en or wt-wt"),
    "crawl.search_safesearch": Choice(("on", "moderate", "off")),
    "crawl.search_backend": Form(r"[a-z_]+(\s*,\s*[a-z_]+)*", "auto or a comma list of ddgs backends"),
    "crawl.corpus_cache_dir": PATH,
    "crawl.corpus_text_model": NAME,
    "crawl.corpus_allow_outside": Flag(),
    "crawl.image_size": Ints(16, 4096),
    "crawl.min_side": Ints(1, 4096),
    "crawl.max_aspect": Num(1, 1000),
    "crawl.max_pixels": Ints(1, 1_000_000_000, "Pillow's decompression-bomb limit"),
    "crawl.jpeg_quality": Ints(1, 100, "Pillow's JPEG quality scale"),
    "crawl.near_dup_threshold": COSINE,
    "crawl.leak_threshold": COSINE,
    "crawl.leak_hamming": Ints(-1, 1024, "-1 = the copy hash check off"),
    "crawl.leak_mismatch": Num(0, 1),
    "crawl.cache_max_bytes": Ints(1, 10**15),
    "crawl.pool": Choice(("process", "thread", "ray")),
    "crawl.ray_address": Form(r"(auto|(ray://)?(\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+):\d{1,5})?",
                              "empty (start a local Ray), auto, or HOST:PORT of a Ray head"),
    "crawl.workers": WORKERS,
    "crawl.prepare_timeout_s": TIMEOUT,
    "crawl.db_batch": Ints(1, 100_000),

    "model.name": Choice(("tiny-64", "vit-s16", "vit-b16")),
    "model.init": Form(r"auto|scratch|timm:\S+|file:[^\x00\n]+",
                       "auto, scratch, timm:MODEL_NAME or file:PATH"),
    "model.mask_ratio": Num(0.05, 0.95),
    "model.caption_weight": Num(0, 100),
    "model.max_caption_tokens": Ints(1, 512, "the text model's longest input"),
    "model.norm_pix_loss": Flag(),
    "model.drop_path": Num(0, 1, below=True),

    "train.batch_size": Ints(1, 4096, "a micro-batch must fit one accelerator; use train.grad_accum for more"),
    "train.steps_per_round": Ints(0, 1_000_000, "0 = the encoder is not trained"),
    "train.lr": Num(0, 1, above=True),
    "train.weight_decay": Num(0, 10),
    "train.betas": Each(Num(0, 1, below=True), 2, 2),
    "train.warmup_steps": Ints(0, 100_000_000),
    "train.total_steps": Ints(1, 1_000_000_000),
    "train.grad_clip": Num(0, 1e6),
    "train.grad_accum": Ints(1, 1024),
    "train.target_share": SHARE,
    "train.candidate_share": SHARE,
    "train.replay_share": SHARE,
    "train.replay_size": Ints(0, 100_000_000),
    "train.replay_temperature": Num(0, 1000, above=True),
    "train.workers": WORKERS,
    "train.bf16": Flag(),
    "train.compile": Flag(),
    "train.min_lr_ratio": SHARE,
    "train.crop_scale_min": Num(0, 1, above=True),

    "reward.k": Ints(1, 10_000),
    "reward.centre": Choice(("web", "none")),
    "reward.background_images": Ints(0, 1_000_000, "0 = no web sample"),
    "reward.contrast": Flag(),
    "reward.floor": Num(-10, 10),
    "reward.floor_mode": Choice(("fixed", "round_min")),
    "reward.encoder": Form(r"model|scratch|timm:\S+|file:[^\x00\n]+", "model, scratch, timm:NAME or file:PATH"),
    "reward.refresh_every": Ints(0, 1_000_000, "0 = never"),
    "reward.refresh_per_query": Ints(1, 1_000_000),

    "policy.name": Choice(("gp", "ucb", "random", "oracle")),
    "policy.vocab": Form(r"imagenet21k|wordnet|sandbox|file:[^\x00\n]+",
                         "imagenet21k, wordnet, sandbox or file:PATH"),
    "policy.descriptors": Form(r"[^\x00\n]*", "a path, or empty for none"),
    "policy.descriptor_share": SHARE,
    "policy.concept_descriptors": Form(r"[^\x00\n]*", "a path, or empty for none"),
    "policy.class_names": Flag(),
    "policy.class_names_share": SHARE,
    "policy.reask_share": SHARE,
    "policy.max_page": Ints(1, 1000),
    "policy.temperature": Num(0, 1000, above=True),
    "policy.epsilon": SHARE,
    "policy.ucb_beta": Num(0, 1000),
    "policy.max_observations": Ints(1, 1_000_000),
    "policy.gp_fit_points": Ints(1, 100_000),
    "policy.gp_restarts": Ints(0, 100),
    "policy.text_model": NAME,
    "policy.embedding_cache": PATH,

    "sandbox.seed": SEED,
    "sandbox.profile": Choice(("none", "realistic", "hostile", "throttled", "down")),
    "sandbox.test_per_class": Ints(1, 10_000),
    "sandbox.looks": Choice(("family", "shared")),
    "sandbox.host": Loopback(),
    "sandbox.port": Ints(0, 65_535, "0 = any free port"),
    "sandbox.stall_s": TIMEOUT,
    "sandbox.oversize_bytes": Ints(1, 10_000_000_000),
    "sandbox.gzip_bomb_bytes": Ints(1, 10_000_000_000),
    "sandbox.forbidden_hosts": Each(Loopback(), 0, 16),
    "sandbox.cache_bytes": Ints(0, 10**12),
    "sandbox.page_size": Ints(0, 500, "0 = as many as asked"),
    "sandbox.page_decay": SHARE,
    "sandbox.named_titles": Num(0, 0.95),

    "eval.label_fractions": Each(Num(0, 1, above=True), 1, 100),
    "eval.knn_k": Ints(1, 10_000),
    "eval.knn_temperature": Num(0, 100, above=True),
    "eval.probe_c": Each(Num(0, 1e6, above=True), 1, 100),
    "eval.probe_folds": Ints(2, 100),
    "eval.max_iter": Ints(1, 1_000_000),
    "eval.seed": SEED,
    "eval.batch_size": Ints(1, 65_536),
    "eval.workers": WORKERS,
    "eval.progress_max_train": Ints(1, 10_000_000),
    "eval.progress_max_test": Ints(1, 10_000_000),
}


def _show(value) -> str:
    """A value as it would be typed after --set."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ",".join(_show(v) for v in value)
    if isinstance(value, str) and (not value or value != value.strip() or not value.isprintable()):
        return repr(value)
    return str(value)


def _number(x: float) -> str:
    return f"{int(x):_}" if x == int(x) else f"{x:g}"


def accepted(name: str) -> str:
    """What the field `name` accepts, in words, from its rule (for --help)."""
    rule = RULES[name]
    if isinstance(rule, Choice):
        return ", ".join(rule.options)
    if isinstance(rule, Form):
        return rule.says
    return (rule.problem(None) or "").removeprefix("must be ")


def check_field(name: str, value, typed: str | None = None) -> None:
    """Raise ConfigError `section.field=value: must be ...` unless `value` is allowed;
    `typed` is the value as the user wrote it after --set, shown instead of `value`."""
    problem = RULES[name].problem(value)
    if problem is not None:
        raise ConfigError(f"{name}={_show(value) if typed is None else typed}: {problem}")


def validate(cfg: Config) -> Config:
    """Check every field of `cfg` (also one built in code) and the rules across fields."""
    for section in SECTIONS:
        part = getattr(cfg, section)
        for f in dataclasses.fields(part):
            check_field(f"{section}.{f.name}", getattr(part, f.name))
    t = cfg.train
    if t.target_share + t.candidate_share + t.replay_share <= 0:
        raise ConfigError("train.target_share, candidate_share and replay_share are all 0: "
                          "a batch needs images from at least one source")
    return cfg

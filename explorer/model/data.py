"""Training and embedding data, streamed from image files on disk.

Only paths and captions are held in memory; each image is opened, decoded (as the crawl sees
it: explorer/crawl/images.py load_rgb) and augmented by a DataLoader worker when its batch is drawn. A training batch mixes three sources in
configured shares: the target's images (no captions), this round's candidates, and a replay
buffer of earlier high-reward images.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms
from torchvision.transforms import InterpolationMode

from explorer.config import Config
from explorer.crawl.images import load_rgb

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SOURCES = ("target", "candidates", "replay")


@dataclass(frozen=True)
class ImageRecord:
    path: str
    caption: str | None = None            # None or "" = no caption (the target's images)


def train_transform(image_size: int, scale_min: float = 0.2):
    """MAE's augmentation: random resized crop (scale 0.2-1), horizontal flip, normalise."""
    return transforms.Compose([
        transforms.RandomResizedCrop(image_size, scale=(scale_min, 1.0),
                                     interpolation=InterpolationMode.BICUBIC),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def eval_transform(image_size: int):
    """Deterministic: resize the shorter side, centre crop, normalise."""
    return transforms.Compose([
        transforms.Resize(image_size, interpolation=InterpolationMode.BICUBIC),
        transforms.CenterCrop(image_size),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def tokenize(tokenizer, caption: str | None, max_tokens: int):
    """caption -> (tokens [T] long, token_mask [T] long, 1 = real token); T = max_tokens.
    No caption -> all padding and an all-zero mask (no caption loss)."""
    if not caption or not caption.strip():
        return (torch.full((max_tokens,), tokenizer.pad_token_id, dtype=torch.long),
                torch.zeros(max_tokens, dtype=torch.long))
    enc = tokenizer(caption, padding="max_length", truncation=True, max_length=max_tokens,
                    return_tensors="pt")
    return enc["input_ids"][0], enc["attention_mask"][0]


class ImageCaptionDataset(Dataset):
    """records -> (img [3,S,S], tokens [T], token_mask [T]); reads each file when asked."""

    def __init__(self, records: Sequence[ImageRecord], transform, tokenizer, max_tokens: int):
        self.records = list(records)
        self.transform = transform
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        rec = self.records[i]
        img = self.transform(load_rgb(rec.path))
        tokens, mask = tokenize(self.tokenizer, rec.caption, self.max_tokens)
        return img, tokens, mask


class MixedBatchSampler:
    """Endless batches of indices into the concatenation target + candidates + replay.

    Each batch takes round(share * batch_size) images from each source (largest remainder,
    so they sum to batch_size); shares of empty sources go to the others. Within a source the
    order is a fresh permutation per pass, so every image is seen once before any repeats.
    Rank `rank` of `world` processes (same seed on each) gets every world-th index of each
    batch from its rank-th on: disjoint shares that together are the whole batch.
    """

    def __init__(self, sizes: Sequence[int], shares: Sequence[float], batch_size: int,
                 seed: int, rank: int = 0, world: int = 1):
        if sum(sizes) == 0:
            raise ValueError("no images to train on: target, candidates and replay are empty")
        self.sizes = list(sizes)
        self.offsets = [0, *itertools.accumulate(sizes)][:-1]
        self.counts = self.split(batch_size, [s if n else 0.0 for s, n in zip(shares, sizes)])
        self.seed = seed
        self.rank, self.world = rank, world

    @staticmethod
    def split(batch_size: int, shares: Sequence[float]) -> list[int]:
        total = sum(shares)
        if total <= 0:
            raise ValueError("batch shares of the non-empty sources sum to zero")
        exact = [batch_size * s / total for s in shares]
        counts = [int(e) for e in exact]
        by_remainder = sorted(range(len(shares)), key=lambda i: counts[i] - exact[i])
        for i in by_remainder[: batch_size - sum(counts)]:
            counts[i] += 1
        return counts

    def _stream(self, source: int, rng: np.random.Generator) -> Iterator[int]:
        while True:
            yield from (self.offsets[source] + rng.permutation(self.sizes[source])).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng(self.seed)
        streams = [self._stream(s, rng) if n else iter(()) for s, n in enumerate(self.sizes)]
        while True:
            batch = [i for s, k in enumerate(self.counts) for i in itertools.islice(streams[s], k)]
            yield batch[self.rank::self.world]


def mixed_batches(target: Sequence[ImageRecord], candidates: Sequence[ImageRecord],
                  replay: Sequence[ImageRecord], cfg: Config, tokenizer, image_size: int,
                  seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Endless iterator of (imgs [B,3,S,S], tokens [B,T] long, token_mask [B,T] long).

    B = cfg.train.batch_size, T = cfg.model.max_caption_tokens; MAE augmentations; images
    decoded by cfg.train.workers worker processes. Under torch.distributed every rank draws the
    same batches of B (the same seed) and keeps its share, B / world_size images: ranks take
    disjoint slices of each batch, every source in its share; crops and flips differ by rank.
    """
    distributed = torch.distributed.is_initialized()
    rank = torch.distributed.get_rank() if distributed else 0
    world = torch.distributed.get_world_size() if distributed else 1
    t = cfg.train
    records = [*target, *candidates, *replay]
    sampler = MixedBatchSampler([len(target), len(candidates), len(replay)],
                                [t.target_share, t.candidate_share, t.replay_share],
                                t.batch_size, seed, rank=rank, world=world)
    dataset = ImageCaptionDataset(records, train_transform(image_size, t.crop_scale_min),
                                  tokenizer, cfg.model.max_caption_tokens)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=t.workers,
                        pin_memory=torch.cuda.is_available(),
                        persistent_workers=t.workers > 0,
                        prefetch_factor=4 if t.workers > 0 else None,
                        generator=torch.Generator().manual_seed(seed + 1000 * rank),
                        worker_init_fn=_seed_worker)
    return iter(loader)


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker from the loader's generator; torchvision's transforms use torch,
    # but keep numpy and random in step too.
    import random

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class _PathDataset(Dataset):
    def __init__(self, paths: Sequence[str], transform):
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(load_rgb(self.paths[i]))


def embed_paths(model, paths: Sequence[str], image_size: int, batch_size: int = 256,
                device: str | torch.device = "cpu", workers: int = 0) -> np.ndarray:
    """Embeddings of image files for rewards and evaluation: float32 [len(paths), D],
    L2-normalised, deterministic (eval transform, model.embed in eval mode)."""
    model = getattr(model, "module", model)   # DDP-wrapped or not
    loader = DataLoader(_PathDataset(paths, eval_transform(image_size)), batch_size=batch_size,
                        num_workers=workers, pin_memory=torch.device(device).type == "cuda")
    out = [model.embed(imgs.to(device, non_blocking=True)).cpu() for imgs in loader]
    if not out:
        return np.zeros((0, model.arch.width), dtype=np.float32)
    return torch.cat(out).numpy().astype(np.float32, copy=False)

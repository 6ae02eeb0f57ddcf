"""Images/s and peak memory of one MUG training step per named config, on this device.

On CUDA also model FLOPs utilisation: FLOPs of one forward+backward counted by
torch.utils.flop_counter.FlopCounterMode (what the masked model really computes: the encoder
sees 25% of the patches), times steps/s, over the device's dense bf16 peak.
Synthetic batches (random pixels; 3 in 4 images captioned, captions filling half of
max_caption_tokens) so that only the step counts, not decoding.

    python bench/train_step.py                       # every config, default batches
    python bench/train_step.py --config vit-b16 --batch 256 --steps 20 --compile

Measured 2026-11-23 on the shared 2-core CPU machine (OMP_NUM_THREADS=1; no GPU was lent):
  tiny-64  batch 32: 23.3 img/s, peak RSS 1.14 GiB, 1.05 GFLOP/image (fwd+bwd)
  vit-s16  batch 4:   3.95 img/s, 1.56 GiB, 12.4 GFLOP/image
  vit-b16  batch 2:   0.38 img/s, 3.18 GiB, 60.5 GFLOP/image
  GPU (bf16, compile, MFU; target >= 40% for vit-b16 on an H100): not measured yet.
Measured 2026-12-02, session 8 (same machine, two benchmarks beside it), the cpu preset's batch:
`python bench/train_step.py --config vit-b16 --batch 32 --steps 1 --warmup 1`:
  vit-b16  batch 32: 0.27 img/s (120 s a step), peak RSS 5.68 GiB: the default vit-b16 with
  `--preset cpu` (auto on a machine without a GPU) fits a 24 GB machine, where batch 256
  (the gpu preset) was killed for memory; a round of its 30 steps is about an hour of training.
2026-12-03: torch's threads with two other single-thread processes busy on the 2
cores (two bench/e2e.py arms), `python bench/train_step.py --config tiny-64 --batch 32 --steps 5`
twice each, under environment variables:
  OMP_NUM_THREADS=1: 28.5, 33.3 img/s   OMP_NUM_THREADS=2: 15.8, 17.0   OMP_NUM_THREADS=2
  OMP_WAIT_POLICY=PASSIVE: 39.9, 39.8   (PASSIVE alone, so 2 threads: 33.8; PASSIVE with 1 thread: 23.9)
  i.e. torch's spinning threads lose half their speed when the cores are shared. The loop was
  not hit by it: `explore run --target sandbox-flowers --hours 1 --set run.rounds=4` (its next
  round's crawl overlapping training) trained at 36 35 43 49 img/s as it is and 33 35 34 42 with
  OMP_WAIT_POLICY=PASSIVE, same load; so nothing was changed.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from explorer.config import Config  # noqa: E402
from explorer.model.mug import MODEL_CONFIGS, build_model  # noqa: E402
from explorer.model.train import Trainer  # noqa: E402

VOCAB = 30522
# Dense bf16 tensor-core peaks, FLOP/s (vendor datasheets).
PEAK_BF16 = {"H100 SXM": 989e12, "H100 80GB HBM3": 989e12, "H100 PCIe": 756e12,
             "H100 NVL": 835e12, "H200": 989e12, "A100": 312e12, "L4": 121e12,
             "RTX 4090": 165e12}
DEFAULT_BATCH = {"cuda": {"tiny-64": 512, "vit-s16": 256, "vit-b16": 256},
                 "cpu": {"tiny-64": 32, "vit-s16": 4, "vit-b16": 2}}


def peak_flops(device: torch.device, override_tflops: float) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_BF16.items():
        if key in name:
            return value
    return None


def synthetic_batch(batch: int, size: int, tokens: int, device: torch.device):
    """imgs [B,3,S,S], tokens [B,T], token_mask [B,T]: 3 in 4 images captioned."""
    imgs = torch.randn(batch, 3, size, size, device=device)
    ids = torch.randint(1000, VOCAB, (batch, tokens), device=device)
    mask = torch.ones(batch, tokens, dtype=torch.long, device=device)
    mask[::4] = 0
    mask[:, tokens // 2:] = 0                          # half padding: web titles are short
    return imgs, ids, mask


def step_flops(trainer: Trainer, batch) -> int:
    """FLOPs of one forward + backward on `batch` (optimiser excluded)."""
    model = trainer.model
    with FlopCounterMode(display=False) as counter:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=trainer.autocast):
            out = model(*batch)
        out["loss"].backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def bench(name: str, batch: int, steps: int, warmup: int, compile_: bool,
          device: torch.device, peak: float | None) -> dict:
    cfg = Config()
    cfg.model.name = name
    cfg.train.batch_size = batch
    cfg.train.compile = compile_
    cfg.train.warmup_steps = 1
    arch = MODEL_CONFIGS[name]
    torch.manual_seed(0)
    trainer = Trainer(cfg, build_model(cfg.model, VOCAB), device)
    data = synthetic_batch(batch, arch.image_size, cfg.model.max_caption_tokens, device)
    batches = [data] * (warmup + steps)
    trainer.train_steps(warmup, batches)                # compile, autotune, allocator warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    stats = trainer.train_steps(steps, batches)
    row = {"config": name, "device": device_name(device), "batch": batch, "steps": steps,
           "compile": compile_, "images_per_s": round(stats["images_per_s"], 2),
           "step_ms": round(1000 * batch / stats["images_per_s"], 2)}
    if device.type == "cuda":
        row["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    else:   # the whole process's high-water mark (Linux: KiB)
        row["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    flops = step_flops(trainer, data)
    row["gflop_per_image"] = round(flops / batch / 1e9, 2)
    if peak:
        row["mfu"] = round(flops * stats["images_per_s"] / batch / peak, 4)
    return row


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", action="append", choices=list(MODEL_CONFIGS),
                    help="repeatable; default: every named config")
    ap.add_argument("--batch", type=int, default=0, help="images per step; 0 = per-config default")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--peak-tflops", type=float, default=0.0,
                    help="device's dense bf16 peak, TFLOP/s (default: looked up by GPU name)")
    ap.add_argument("--json", help="append one JSON line per config to this file")
    args = ap.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    peak = peak_flops(device, args.peak_tflops)
    for name in args.config or list(MODEL_CONFIGS):
        batch = args.batch or DEFAULT_BATCH[device.type][name]
        row = bench(name, batch, args.steps, args.warmup, args.compile, device, peak)
        print(json.dumps(row), flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()

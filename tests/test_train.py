"""Trainer and data: schedule, batch mixing, learning, resume equivalence, DDP replicas."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from explorer.config import Config
from explorer.model.data import ImageRecord, MixedBatchSampler, embed_paths, mixed_batches
from explorer.model.mug import build_model
from explorer.inputs.text import load_tokenizer
from explorer.model.train import Trainer, lr_factor, param_groups

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220),
           "yellow": (230, 210, 20)}
SHAPES = ("circle", "square", "triangle")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def draw(path: Path, colour: str, shape: str, seed: int) -> None:
    """A 64-px coloured shape at a random place and size on a noisy light background."""
    rng = np.random.default_rng(seed)
    bg = (200 + rng.integers(-20, 20, size=(64, 64, 3))).clip(0, 255).astype(np.uint8)
    im = Image.fromarray(bg)
    d = ImageDraw.Draw(im)
    r = int(rng.integers(12, 24))
    cx, cy = (int(v) for v in rng.integers(r, 64 - r, size=2))
    box = (cx - r, cy - r, cx + r, cy + r)
    fill = COLOURS[colour]
    if shape == "circle":
        d.ellipse(box, fill=fill)
    elif shape == "square":
        d.rectangle(box, fill=fill)
    else:
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    im.save(path)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """(target records without captions, candidate records with captions)."""
    root = tmp_path_factory.mktemp("shapes")
    target, candidates = [], []
    for i in range(48):
        colour, shape = list(COLOURS)[i % 4], SHAPES[(i // 4) % 3]
        path = root / f"{i:03d}.png"
        draw(path, colour, shape, seed=i)
        if i < 12:
            target.append(ImageRecord(str(path)))
        else:
            candidates.append(ImageRecord(str(path), f"a {colour} {shape}"))
    return target, candidates


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def tiny_config(**train) -> Config:
    cfg = Config()
    cfg.model.name = "tiny-64"
    cfg.model.max_caption_tokens = 8
    cfg.train.batch_size = 16
    cfg.train.workers = 0
    cfg.train.lr = 1e-3 * 256 / 16       # peak lr 1e-3 at batch 16
    cfg.train.warmup_steps = 5
    cfg.train.total_steps = 100
    cfg.train.replay_share = 0.0
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


def test_lr_schedule_warms_up_then_decays():
    f = [lr_factor(s, 10, 110, 0.1) for s in range(120)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(f[:10], f[1:10]))
    assert all(a >= b for a, b in zip(f[10:], f[11:]))
    assert f[60] == pytest.approx(0.55) and f[110] == pytest.approx(0.1) == f[119]


def test_no_weight_decay_on_norms_biases_and_position_embeddings():
    torch.manual_seed(0)
    cfg = tiny_config()
    model = build_model(cfg.model, 30522)
    decay, no_decay = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    nd = {names[id(p)] for p in no_decay["params"]}
    assert {"cls_token", "mask_token", "caption_decoder.pos_embed", "norm.weight",
            "blocks.0.attn.qkv.bias"} <= nd
    d = {names[id(p)] for p in decay["params"]}
    assert d >= {"blocks.0.attn.qkv.weight", "caption_decoder.token_embed.weight"}
    assert "pos_embed" not in d | nd                         # fixed sin-cos: not trained at all
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0


def test_mixed_batches_follow_shares_and_cover_each_source():
    assert MixedBatchSampler.split(16, [0.25, 0.5, 0.25]) == [4, 8, 4]
    assert sum(MixedBatchSampler.split(10, [1 / 3, 1 / 3, 1 / 3])) == 10
    sampler = MixedBatchSampler([5, 20, 0], [0.25, 0.5, 0.25], 12, seed=0)
    assert sampler.counts == [4, 8, 0]                      # replay empty: its share goes
    batches = [b for b, _ in zip(sampler, range(5))]
    for b in batches:
        assert sum(i < 5 for i in b) == 4 and sum(5 <= i < 25 for i in b) == 8
    seen = [i for b in batches[:5] for i in b if i >= 5][:20]
    assert sorted(seen) == list(range(5, 25))               # a full pass before any repeat
    with pytest.raises(ValueError):
        MixedBatchSampler([0, 0, 0], [1, 1, 1], 4, 0)


def test_mixed_batches_stream_images_tokens_and_masks(shapes, tokenizer):
    target, candidates = shapes
    cfg = tiny_config(batch_size=8)
    imgs, tokens, token_mask = next(mixed_batches(target, candidates, [], cfg, tokenizer, 64, 0))
    assert imgs.shape == (8, 3, 64, 64) and imgs.dtype == torch.float32
    assert tokens.shape == token_mask.shape == (8, 8) and tokens.dtype == torch.long
    # shares 0.25 : 0.5 (no replay) of 8 -> the first 3 have no caption, the others do
    assert (token_mask[:3] == 0).all() and (token_mask[3:].sum(1) >= 4).all()
    assert abs(imgs.mean().item()) < 1.5                    # normalised


def test_embed_paths_deterministic(shapes):
    torch.manual_seed(0)
    model = build_model(tiny_config().model, 30522)
    paths = [r.path for r in shapes[0][:5]]
    a = embed_paths(model, paths, 64, batch_size=2)
    b = embed_paths(model, paths, 64, batch_size=4)
    assert a.shape == (5, 192) and a.dtype == np.float32
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)


def test_grad_accumulation_consumes_micro_batches():
    torch.manual_seed(0)
    cfg = tiny_config(batch_size=2, grad_accum=3)
    trainer = Trainer(cfg, build_model(cfg.model, 30522), "cpu")
    drawn = []

    def batches():
        while True:
            drawn.append(1)
            yield torch.randn(2, 3, 64, 64), torch.randint(0, 30522, (2, 8)), torch.ones(2, 8)

    stats = trainer.train_steps(2, batches())
    assert len(drawn) == 6 and stats["steps"] == 2 == trainer.step
    assert trainer.effective_batch == 6


def test_both_losses_fall_on_shape_images(shapes, tokenizer):
    torch.manual_seed(0)
    cfg = tiny_config(batch_size=8, lr=1e-3 * 256 / 8, total_steps=40)
    trainer = Trainer(cfg, build_model(cfg.model, tokenizer.vocab_size), "cpu")
    batches = mixed_batches(*shapes, [], cfg, tokenizer, 64, seed=0)
    history = [trainer.train_steps(1, batches) for _ in range(40)]
    pixel = [h["pixel_loss"] for h in history]
    caption = [h["caption_loss"] for h in history]
    first_p, last_p = np.mean(pixel[:10]), np.mean(pixel[-10:])
    first_c, last_c = np.mean(caption[:10]), np.mean(caption[-10:])
    assert last_p < 0.8 * first_p, (first_p, last_p)
    assert last_c < 0.5 * first_c, (first_c, last_c)


def _fixed_batches(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        tokens = torch.randint(0, 30522, (4, 8), generator=g)
        mask = torch.ones(4, 8, dtype=torch.long)
        mask[0] = 0
        out.append((torch.randn(4, 3, 64, 64, generator=g), tokens, mask))
    return out


def _trainer(seed):
    torch.manual_seed(seed)
    cfg = tiny_config(batch_size=4, warmup_steps=2, total_steps=6)
    return Trainer(cfg, build_model(cfg.model, 30522), "cpu")


def test_resume_equals_straight_run(tmp_path):
    batches = _fixed_batches(6)
    straight = _trainer(0)
    torch.manual_seed(42)
    straight.train_steps(6, batches)

    first = _trainer(0)
    torch.manual_seed(42)
    first.train_steps(3, batches[:3])
    first.save_checkpoint(tmp_path / "ck.pt")
    assert not list(tmp_path.glob("*.tmp"))
    torch.manual_seed(999)                                  # scramble: the checkpoint restores
    resumed = _trainer(1)
    config = resumed.load_checkpoint(tmp_path / "ck.pt")
    assert config["model"]["name"] == "tiny-64" and resumed.step == 3
    resumed.train_steps(3, batches[3:])

    assert resumed.step == straight.step == 6
    assert resumed.scheduler.get_last_lr() == straight.scheduler.get_last_lr()
    for (k, a), b in zip(straight.model.state_dict().items(),
                         resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)
    ck = torch.load(tmp_path / "ck.pt", weights_only=True)  # one plain dict
    assert set(ck) == {"model", "optimizer", "scheduler", "step", "rng", "config", "extra"}
    assert set(ck["rng"]) == {"torch", "cuda", "numpy", "python"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_gloo_ranks_end_with_identical_weights(shapes, tmp_path):
    target, candidates = shapes
    (tmp_path / "t.tsv").write_text("".join(f"{r.path}\n" for r in target))
    (tmp_path / "c.tsv").write_text("".join(f"{r.path}\t{r.caption}\n" for r in candidates))
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path.cwd())}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
           "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "explorer.model.train",
           "--target", str(tmp_path / "t.tsv"), "--candidates", str(tmp_path / "c.tsv"),
           "--steps", "3", "--set", "model.name=tiny-64", "--set", "train.batch_size=4",
           "--set", "train.workers=0", "--set", "model.max_caption_tokens=8",
           "--set", "train.warmup_steps=1", "--set", "train.lr=0.05",
           "--set", "train.grad_accum=2",                     # exercises no_sync
           "--weights-per-rank", str(tmp_path / "w"), "--save", str(tmp_path / "ck.pt")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    w0 = torch.load(tmp_path / "w" / "rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "w" / "rank1.pt", weights_only=True)
    ck = torch.load(tmp_path / "ck.pt", weights_only=True)
    assert ck["step"] == 3 and ck["config"]["train"]["grad_accum"] == 2
    torch.manual_seed(0)                                    # the ranks' common start
    start = build_model(tiny_config().model, 30522).state_dict()
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    assert not torch.equal(w0["blocks.0.attn.qkv.weight"], start["blocks.0.attn.qkv.weight"])

"""MUG model: shapes, masking invariants, losses, embeddings, initialisation."""
import pytest
import torch

from explorer.config import ModelConfig
from explorer.mug import MODEL_CONFIGS, MUG, Arch, WeightsUnavailable, build_model

VOCAB = 30522
# A 224-px, patch-16 model as narrow as can be: the vit-s16/b16 geometry at test cost.
NARROW_224 = Arch(224, 16, 32, 1, 2, 32, 1, 2, 32, 1, 2)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # On a shared 2-core machine two intra-op threads contend and run ~7x slower than one.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(**kw) -> MUG:
    torch.manual_seed(0)
    return build_model(ModelConfig(name="tiny-64", **kw), VOCAB)


@pytest.mark.parametrize("arch", [MODEL_CONFIGS["tiny-64"], NARROW_224], ids=["tiny-64", "224/16"])
def test_stage_shapes(arch):
    torch.manual_seed(0)
    model = MUG(arch, VOCAB, mask_ratio=0.75, max_caption_tokens=12)
    N, S, p = 2, arch.image_size, arch.patch_size
    L, keep = (S // p) ** 2, int((S // p) ** 2 * 0.25)
    imgs = torch.randn(N, 3, S, S)
    x = model.patchify(imgs)
    assert x.shape == (N, L, p * p * 3)
    assert torch.equal(model.unpatchify(x), imgs)

    latent, mask, ids_restore = model.forward_encoder(imgs, 0.75)
    assert latent.shape == (N, 1 + keep, arch.width)
    assert mask.shape == ids_restore.shape == (N, L)
    pred = model.forward_pixel_decoder(latent, ids_restore)
    assert pred.shape == (N, L, p * p * 3)
    tokens = torch.randint(0, VOCAB, (N, 12))
    hidden = model.forward_caption_decoder(latent, tokens)
    assert hidden.shape == (N, 11, arch.caption_width)
    assert model.caption_decoder.logits(hidden).shape == (N, 11, VOCAB)
    out = model(imgs, tokens, torch.ones_like(tokens))
    assert set(out) == {"loss", "pixel_loss", "caption_loss"}
    assert all(v.ndim == 0 and torch.isfinite(v) for v in out.values())
    assert model.embed(imgs).shape == (N, arch.width)


def test_random_masking_invariants():
    model = tiny()
    torch.manual_seed(1)
    N, L, D = 4, 64, 8
    x = torch.randn(N, L, D)
    for ratio in (0.75, 0.5, 0.9):
        visible, mask, ids_restore = model.random_masking(x, ratio)
        keep = int(L * (1 - ratio))
        assert visible.shape == (N, keep, D)
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
        assert (mask.sum(1) == L - keep).all()               # 1 = removed
        for n in range(N):
            assert sorted(ids_restore[n].tolist()) == list(range(L))
            # the visible tokens are exactly the rows of x that the mask keeps
            kept = x[n][mask[n] == 0]
            assert torch.equal(kept[torch.argsort(kept[:, 0])],
                               visible[n][torch.argsort(visible[n][:, 0])])
    assert not torch.equal(mask[0], mask[1])                 # per-sample masks


def test_pixel_loss_only_on_masked_patches_and_normalised():
    model = tiny()
    imgs = torch.randn(2, 3, 64, 64)
    target = model.patchify(imgs)
    target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** .5
    mask = torch.zeros(2, 64)
    mask[:, :10] = 1
    pred = target.clone()
    pred[:, 10:] += 5.0                                       # errors only on kept patches
    pixel, caption = model.forward_loss(imgs, pred, mask)
    assert pixel.item() == pytest.approx(0.0, abs=1e-5) and caption.item() == 0.0
    pred[:, :10] += 1.0
    assert model.forward_loss(imgs, pred, mask)[0].item() == pytest.approx(1.0, rel=1e-4)


def test_caption_less_images_add_no_caption_loss():
    model = tiny()
    imgs = torch.randn(2, 3, 64, 64)
    tokens = torch.randint(1000, 2000, (2, 10))
    token_mask = torch.ones(2, 10, dtype=torch.long)
    token_mask[0, 6:] = 0
    token_mask[1] = 0                                         # image 1: no caption

    def losses(tok):
        torch.manual_seed(5)                                  # same masks each call
        return model(imgs, tok, token_mask)

    base = losses(tokens)
    other = tokens.clone()
    other[1] = torch.randint(2000, 3000, (10,))               # whatever image 1 "says"
    assert torch.equal(base["caption_loss"], losses(other)["caption_loss"])
    other[0, 3] = 2500                                        # image 0's caption does count
    assert not torch.equal(base["caption_loss"], losses(other)["caption_loss"])

    # a batch with no captions at all: caption loss 0, total = pixel, no caption gradient
    model.zero_grad()
    out = model(imgs, tokens, torch.zeros_like(token_mask))
    assert out["caption_loss"].item() == 0.0
    assert torch.equal(out["loss"], out["pixel_loss"])
    out["loss"].backward()
    grads = [p.grad for p in model.caption_decoder.parameters() if p.grad is not None]
    assert grads and all(g.abs().max() == 0 for g in grads)
    assert model.blocks[0].attn.qkv.weight.grad.abs().max() > 0

    out = model(imgs)                                         # no tokens at all
    assert out["caption_loss"].item() == 0.0


def test_embed_is_deterministic_normalised_and_keeps_train_mode():
    model = tiny(drop_path=0.1)                               # train mode would be random
    model.train()
    imgs = torch.randn(3, 3, 64, 64)
    a, b = model.embed(imgs), model.embed(imgs)
    assert torch.equal(a, b)
    assert a.dtype == torch.float32 and a.shape == (3, 192)
    assert torch.allclose(a.norm(dim=1), torch.ones(3), atol=1e-5)
    assert model.training and not a.requires_grad


def test_init_from_file_checkpoint_or_state_dict(tmp_path):
    model = tiny()
    torch.save({"model": model.state_dict(), "step": 3}, tmp_path / "ck.pt")
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, tmp_path / "sd.pt")
    for name in ("ck.pt", "sd.pt"):
        torch.manual_seed(123)
        loaded = build_model(ModelConfig(name="tiny-64", init=f"file:{tmp_path / name}"), VOCAB)
        for (k, v), w in zip(model.state_dict().items(), loaded.state_dict().values()):
            assert torch.equal(v, w), k


@pytest.mark.parametrize("init,needle", [("file:/no/such/weights.pt", "no weights file"),
                                         ("timm:no_such_model_xyz", "no_such_model_xyz")])
def test_unavailable_weights_are_one_clear_line(init, needle):
    with pytest.raises(WeightsUnavailable) as err:
        build_model(ModelConfig(name="tiny-64", init=init), VOCAB)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_timm_init_offline_hub_is_one_clear_line(monkeypatch):
    # The hub in offline mode: answered from the local cache or refused, no connection made.
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailable) as err:
        build_model(ModelConfig(name="vit-s16", init="timm:vit_small_patch16_224.augreg_in1k"),
                    VOCAB)
    assert "vit_small_patch16_224" in str(err.value) and "\n" not in str(err.value)


def test_timm_init_copies_matching_encoder_weights(monkeypatch):
    import timm

    torch.manual_seed(7)
    src = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64,
                            patch_size=8, embed_dim=192, depth=6, num_heads=3)
    other = timm.create_model("vit_tiny_patch16_224", pretrained=False, embed_dim=96,
                              depth=1, num_heads=3)
    monkeypatch.setattr(timm, "create_model", lambda name, pretrained: src)
    model = build_model(ModelConfig(name="tiny-64", init="timm:whatever"), VOCAB)
    sd = src.state_dict()
    for k in ("patch_embed.proj.weight", "cls_token", "pos_embed", "blocks.5.mlp.fc2.weight",
              "norm.weight"):
        assert torch.equal(model.state_dict()[k], sd[k]), k
    monkeypatch.setattr(timm, "create_model", lambda name, pretrained: other)
    with pytest.raises(WeightsUnavailable, match="no encoder weights matching"):
        build_model(ModelConfig(name="tiny-64", init="timm:narrow"), VOCAB)

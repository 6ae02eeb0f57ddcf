"""MUG model: shapes, masking invariants, losses, embeddings, initialisation."""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from explorer.config import PRETRAINED_INIT, ModelConfig
from explorer.model.mug import (ENCODER, MODEL_CONFIGS, MUG, Arch, LoadReport, WeightsUnavailable,
                          build_model, check_init, fit_state)

VOCAB = 30522
# A 224-px, patch-16 model as narrow as can be: the vit-s16/b16 geometry at test cost.
NARROW_224 = Arch(224, 16, 32, 1, 2, 32, 1, 2, 32, 1, 2)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


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


# ---- pretrained starts: timm encoders, files, what does not fit -------------------------------

def timm_tiny(img_size: int = 64):
    """A timm ViT of tiny-64's encoder shape (random weights; no download)."""
    import timm

    torch.manual_seed(7)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=img_size,
                             patch_size=8, embed_dim=192, depth=6, num_heads=3)


@pytest.fixture(scope="module")
def tiny_shapes() -> dict[str, torch.Tensor]:
    """tiny-64's own tensors, shapes only (meta device)."""
    with torch.device("meta"):
        return MUG(MODEL_CONFIGS["tiny-64"], VOCAB).state_dict()


@pytest.fixture(scope="module")
def timm_tiny_state() -> dict[str, torch.Tensor]:
    return timm_tiny().state_dict()


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_file_init_loads_a_timm_encoder_and_starts_the_decoders_fresh(tmp_path, suffix, timm_tiny_state):
    from safetensors.torch import save_file

    path = tmp_path / f"vit{suffix}"
    if suffix == ".pt":
        torch.save(timm_tiny_state, path)
    else:
        save_file(timm_tiny_state, path)
    scratch = tiny()
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="tiny-64", init=f"file:{path}"), VOCAB)
    own = model.state_dict()
    encoder = [k for k in own if k.startswith(ENCODER)]
    assert encoder and all(torch.equal(own[k], timm_tiny_state[k]) for k in encoder)
    decoders = [k for k in own if k not in encoder]
    assert all(torch.equal(own[k], scratch.state_dict()[k]) for k in decoders)
    report = check_init(ModelConfig(name="tiny-64", init=f"file:{path}"))
    assert report == LoadReport(loaded=len(encoder), fresh=len(decoders),
                                unused=2, resized=())   # timm's head.weight, head.bias


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(grid=st.integers(1, 24))
def test_a_pos_embed_of_any_square_grid_is_resampled_to_ours(tiny_shapes, timm_tiny_state, grid):
    state = dict(timm_tiny_state, pos_embed=torch.randn(1, 1 + grid * grid, 192))
    take, report = fit_state(tiny_shapes, state, "file:x", "tiny-64")
    assert take["pos_embed"].shape == tiny_shapes["pos_embed"].shape
    assert torch.equal(take["pos_embed"][:, 0], state["pos_embed"][:, 0])   # class token kept
    assert report.resized == (() if grid == 8 else ("pos_embed",))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), how=st.sampled_from(["drop", "wider", "narrower"]))
def test_any_encoder_tensor_that_does_not_fit_is_refused_in_one_line(tiny_shapes, timm_tiny_state,
                                                                     data, how):
    key = data.draw(st.sampled_from(sorted(k for k in tiny_shapes if k.startswith(ENCODER))))
    state = dict(timm_tiny_state)
    if how == "drop":
        del state[key]
    else:
        v = state[key]
        state[key] = torch.zeros(*v.shape[:-1], v.shape[-1] + (8 if how == "wider" else -1))
    with pytest.raises(WeightsUnavailable) as err:
        fit_state(tiny_shapes, state, "file:x.pt", "tiny-64")
    message = str(err.value)
    assert "\n" not in message and key in message and "--init" in message and "scratch" in message


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_decoder_tensors_that_do_not_fit_start_fresh(tiny_shapes, data):
    own = {k: torch.zeros(v.shape) for k, v in tiny_shapes.items()}
    decoder = sorted(k for k in own if not k.startswith(ENCODER))
    bad = data.draw(st.sets(st.sampled_from(decoder), min_size=1, max_size=5))
    state = {k: (torch.zeros(*v.shape, 2) if k in bad else v) for k, v in own.items()}
    take, report = fit_state(tiny_shapes, state, "file:x.pt", "tiny-64")
    assert set(take) == set(own) - bad
    assert (report.loaded, report.fresh, report.unused) == (len(own) - len(bad), len(bad), len(bad))


@pytest.mark.parametrize("init,needle", [("file:/no/such/weights.pt", "no such file"),
                                         ("timm:no_such_model_xyz", "no_such_model_xyz")])
def test_unavailable_weights_are_one_clear_line(init, needle):
    for attempt in (lambda: build_model(ModelConfig(name="tiny-64", init=init), VOCAB),
                    lambda: check_init(ModelConfig(name="tiny-64", init=init))):
        with pytest.raises(WeightsUnavailable) as err:
            attempt()
        message = str(err.value)
        assert needle in message and "\n" not in message
        assert f"--init {init}" in message and "--init scratch" in message


def test_unreadable_or_empty_files_are_one_clear_line(tmp_path):
    (tmp_path / "text.pt").write_text("not a checkpoint")
    torch.save({"step": 3}, tmp_path / "nothing.pt")
    for name in ("text.pt", "nothing.pt"):
        with pytest.raises(WeightsUnavailable) as err:
            check_init(ModelConfig(name="tiny-64", init=f"file:{tmp_path / name}"))
        assert name in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("name", sorted(MODEL_CONFIGS))
def test_every_model_has_a_default_start_that_fits_it(name):
    """Each pretrained default is a timm checkpoint whose architecture fits ours (shapes only,
    on the meta device: nothing is downloaded)."""
    import timm

    init = PRETRAINED_INIT[name]
    if init == "scratch":
        return
    arch = init.removeprefix("timm:")
    assert timm.is_model_pretrained(arch)
    with torch.device("meta"):
        theirs = timm.create_model(arch.partition(".")[0], pretrained=False).state_dict()
        ours = MUG(MODEL_CONFIGS[name], VOCAB).state_dict()
    _, report = fit_state(ours, theirs, init, name)
    assert report.loaded == sum(k.startswith(ENCODER) for k in ours)


def test_timm_init_copies_the_encoder_weights(monkeypatch, timm_tiny_state):
    import timm

    src = timm_tiny()
    monkeypatch.setattr(timm, "is_model_pretrained", lambda name: True)
    monkeypatch.setattr(timm, "create_model", lambda name, pretrained: src)
    model = build_model(ModelConfig(name="tiny-64", init="timm:whatever"), VOCAB)
    for k in ("patch_embed.proj.weight", "cls_token", "pos_embed", "blocks.5.mlp.fc2.weight",
              "norm.weight"):
        assert torch.equal(model.state_dict()[k], timm_tiny_state[k]), k

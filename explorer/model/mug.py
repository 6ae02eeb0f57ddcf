"""MUG: masked-image reconstruction plus caption generation, one ViT encoder.

    imgs [N,3,H,W] -> patches -> random masking (keep 1-r) -> ViT encoder (timm blocks)
        -> pixel decoder: mask tokens + visible tokens -> pixels of every patch; MSE on the
           masked ones, each target patch normalised (MAE)
        -> caption decoder: small causal transformer over the caption's WordPiece tokens,
           cross-attending to the visible tokens; next-token cross-entropy, padding ignored
    loss = pixel + caption_weight * caption. An image whose caption is empty (token_mask all
    zero: the target's images) adds its pixel loss alone.

Named architectures live in `MODEL_CONFIGS`; `build_model` picks one by `ModelConfig.name`
and initialises it from scratch, from a timm model's pretrained weights, or from a file.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import PatchEmbed, build_sincos2d_pos_embed, resample_abs_pos_embed, trunc_normal_
from timm.models.vision_transformer import Block

from explorer.config import ModelConfig
from explorer.errors import UserError, first_line

log = logging.getLogger(__name__)


class WeightsUnavailable(UserError, RuntimeError):
    """Requested initial weights cannot be had (no hub, no file, nothing matching)."""


@dataclass(frozen=True)
class Arch:
    image_size: int
    patch_size: int
    width: int
    depth: int
    heads: int
    decoder_width: int
    decoder_depth: int
    decoder_heads: int
    caption_width: int
    caption_depth: int
    caption_heads: int
    mlp_ratio: float = 4.0
    timm_name: str = ""                   # the timm model whose encoder this one mirrors


MODEL_CONFIGS: dict[str, Arch] = {
    # CPU demo: 64 tokens of 8x8 px; learns in minutes on a laptop core.
    "tiny-64": Arch(64, 8, 192, 6, 3, 128, 2, 4, 192, 2, 3),
    "vit-s16": Arch(224, 16, 384, 12, 6, 256, 4, 8, 384, 2, 6,
                    timm_name="vit_small_patch16_224"),
    # MAE's ViT-B decoder is 512 wide, 8 deep; MUG's caption decoder is kept light too.
    "vit-b16": Arch(224, 16, 768, 12, 12, 512, 8, 16, 512, 4, 8,
                    timm_name="vit_base_patch16_224"),
}


def _sincos_pos_embed(grid: int, dim: int, cls_token: bool) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding, as MAE: [1, (1+)grid*grid, dim]."""
    pe = build_sincos2d_pos_embed([grid, grid], dim=dim)
    if cls_token:
        pe = torch.cat([torch.zeros(1, dim), pe], dim=0)
    return pe.unsqueeze(0)


class CaptionDecoder(nn.Module):
    """Causal transformer over caption tokens, cross-attending to image tokens.

    Pre-norm `nn.TransformerDecoderLayer`s (their attention runs through
    F.scaled_dot_product_attention); output projection tied to the token embedding.
    """

    def __init__(self, vocab_size: int, width: int, depth: int, heads: int, max_tokens: int,
                 memory_width: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.token_embed = nn.Embedding(vocab_size, width)
        self.pos_embed = nn.Parameter(torch.zeros(1, max_tokens, width))
        self.memory_proj = nn.Linear(memory_width, width)
        layer = nn.TransformerDecoderLayer(width, heads, int(width * mlp_ratio), dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.layers = nn.TransformerDecoder(layer, depth)
        self.norm = nn.LayerNorm(width)
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.token_embed.weight, std=0.02)

    def forward(self, tokens: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """tokens: [N, T] long; memory: [N, S, memory_width] -> hidden states [N, T, width]."""
        T = tokens.shape[1]
        x = self.token_embed(tokens) + self.pos_embed[:, :T]
        causal = nn.Transformer.generate_square_subsequent_mask(T, device=x.device, dtype=x.dtype)
        # No key-padding mask: padding sits on the right, so the causal mask already keeps
        # real tokens from seeing it (and an all-padding caption cannot make a row of -inf).
        x = self.layers(x, self.memory_proj(memory), tgt_mask=causal, tgt_is_causal=True)
        return self.norm(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: [..., width] -> [..., vocab] (weights tied to the token embedding)."""
        return hidden @ self.token_embed.weight.t()


class MUG(nn.Module):
    def __init__(self, arch: Arch, vocab_size: int, mask_ratio: float = 0.75,
                 caption_weight: float = 1.0, max_caption_tokens: int = 32,
                 norm_pix_loss: bool = True, drop_path: float = 0.0):
        super().__init__()
        self.arch = arch
        self.mask_ratio = mask_ratio
        self.caption_weight = caption_weight
        self.norm_pix_loss = norm_pix_loss
        p, D, Dd = arch.patch_size, arch.width, arch.decoder_width
        grid = arch.image_size // p

        # encoder: attribute names match timm's VisionTransformer, so its weights copy over
        self.patch_embed = PatchEmbed(arch.image_size, p, 3, D)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embed = nn.Parameter(_sincos_pos_embed(grid, D, True), requires_grad=False)
        dpr = [drop_path * i / max(arch.depth - 1, 1) for i in range(arch.depth)]
        self.blocks = nn.Sequential(*[Block(D, arch.heads, arch.mlp_ratio, qkv_bias=True,
                                            drop_path=dpr[i]) for i in range(arch.depth)])
        self.norm = nn.LayerNorm(D, eps=1e-6)

        # pixel decoder
        self.decoder_embed = nn.Linear(D, Dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, Dd))
        self.decoder_pos_embed = nn.Parameter(_sincos_pos_embed(grid, Dd, True),
                                              requires_grad=False)
        self.decoder_blocks = nn.Sequential(*[Block(Dd, arch.decoder_heads, arch.mlp_ratio,
                                                    qkv_bias=True)
                                              for _ in range(arch.decoder_depth)])
        self.decoder_norm = nn.LayerNorm(Dd, eps=1e-6)
        self.decoder_pred = nn.Linear(Dd, p * p * 3)

        # caption decoder
        self.caption_decoder = CaptionDecoder(vocab_size, arch.caption_width, arch.caption_depth,
                                              arch.caption_heads, max_caption_tokens, D,
                                              arch.mlp_ratio)
        self._init_weights()

    def _init_weights(self) -> None:
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        for name, m in self.named_modules():
            if name.startswith("caption_decoder.layers"):
                continue  # nn.TransformerDecoderLayer initialises itself (xavier)
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    # ---- pixels <-> patches ---------------------------------------------------------------
    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """imgs: [N, 3, H, W] -> x: [N, L, p*p*3]."""
        p = self.arch.patch_size
        N, C, H, W = imgs.shape
        h, w = H // p, W // p
        x = imgs.reshape(N, C, h, p, w, p)
        return torch.einsum("nchpwq->nhwpqc", x).reshape(N, h * w, p * p * C)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, L, p*p*3] -> imgs: [N, 3, H, W]."""
        p = self.arch.patch_size
        h = w = int(x.shape[1] ** 0.5)
        x = x.reshape(x.shape[0], h, w, p, p, 3)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(x.shape[0], 3, h * p, w * p)

    def random_masking(self, x: torch.Tensor, mask_ratio: float):
        """Per-sample random masking by shuffling noise.

        x: [N, L, D] -> (x_visible [N, L_keep, D], mask [N, L] 0 keep 1 remove,
                         ids_restore [N, L]); L_keep = int(L * (1 - mask_ratio)).
        """
        N, L, D = x.shape
        keep = int(L * (1 - mask_ratio))
        noise = torch.rand(N, L, device=x.device)
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :keep]
        x_visible = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, D))
        mask = torch.ones(N, L, device=x.device)
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        return x_visible, mask, ids_restore

    # ---- stages ---------------------------------------------------------------------------
    def forward_encoder(self, imgs: torch.Tensor, mask_ratio: float):
        """imgs: [N, 3, H, W] -> (latent [N, 1+L_keep, D] (cls first), mask [N, L],
        ids_restore [N, L]). mask_ratio 0 keeps every patch in order."""
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:]
        if mask_ratio > 0:
            x, mask, ids_restore = self.random_masking(x, mask_ratio)
        else:
            N, L, _ = x.shape
            mask = torch.zeros(N, L, device=x.device)
            ids_restore = torch.arange(L, device=x.device).expand(N, L)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = self.blocks(torch.cat([cls, x], dim=1))
        return self.norm(x), mask, ids_restore

    def forward_pixel_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor):
        """latent: [N, 1+L_keep, D], ids_restore: [N, L] -> pred [N, L, p*p*3]."""
        x = self.decoder_embed(latent)
        N, L = ids_restore.shape
        masked = self.mask_token.expand(N, L + 1 - x.shape[1], -1)
        x_ = torch.cat([x[:, 1:], masked], dim=1)
        x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[2]))
        x = torch.cat([x[:, :1], x_], dim=1) + self.decoder_pos_embed
        x = self.decoder_norm(self.decoder_blocks(x))
        return self.decoder_pred(x)[:, 1:]

    def forward_caption_decoder(self, latent: torch.Tensor, tokens: torch.Tensor):
        """latent: [N, 1+L_keep, D] (visible tokens), tokens: [N, T] -> hidden [N, T-1, W]
        from which `caption_decoder.logits` predicts tokens[:, 1:] (inputs tokens[:, :-1])."""
        return self.caption_decoder(tokens[:, :-1], latent)

    def forward_loss(self, imgs, pred, mask, hidden=None, tokens=None, token_mask=None):
        """imgs [N,3,H,W], pred [N,L,p*p*3], mask [N,L]; hidden [N,T-1,W] (caption decoder),
        tokens [N,T], token_mask [N,T] (1 = real token). Returns (pixel_loss, caption_loss).

        Pixel: MSE on removed patches, each target patch normalised to zero mean, unit var.
        Caption: cross-entropy over the real target tokens of the whole batch; vocabulary
        logits are computed for those positions only (padding would cost most of the FLOPs).
        Images whose mask is all zero add nothing; a batch without captions gives 0 (with
        zero gradients, so every parameter still takes part, as DDP wants).
        """
        target = self.patchify(imgs)
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        per_patch = ((pred.float() - target) ** 2).mean(dim=-1)
        pixel_loss = (per_patch * mask).sum() / mask.sum().clamp(min=1)
        if hidden is None:
            return pixel_loss, pixel_loss.new_zeros(())
        real = token_mask[:, 1:] > 0
        if not real.any():
            return pixel_loss, hidden.sum() * 0.0
        logits = self.caption_decoder.logits(hidden[real])
        caption_loss = F.cross_entropy(logits.float(), tokens[:, 1:][real])
        return pixel_loss, caption_loss

    def forward(self, imgs: torch.Tensor, tokens: torch.Tensor | None = None,
                token_mask: torch.Tensor | None = None, mask_ratio: float | None = None) -> dict:
        """imgs [N,3,H,W]; tokens [N,T] long | None; token_mask [N,T] | None (1 = real token;
        None = every token is real) -> dict(loss, pixel_loss, caption_loss), scalars."""
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        latent, mask, ids_restore = self.forward_encoder(imgs, ratio)
        pred = self.forward_pixel_decoder(latent, ids_restore)
        hidden = None
        if tokens is not None:
            if token_mask is None:
                token_mask = torch.ones_like(tokens)
            hidden = self.forward_caption_decoder(latent, tokens)
        pixel_loss, caption_loss = self.forward_loss(imgs, pred, mask, hidden, tokens, token_mask)
        loss = pixel_loss + self.caption_weight * caption_loss
        return {"loss": loss, "pixel_loss": pixel_loss, "caption_loss": caption_loss}

    @torch.no_grad()
    def embed(self, imgs: torch.Tensor) -> torch.Tensor:
        """imgs [N,3,H,W] (normalised) -> [N, D] float32: mean of all patch tokens of the
        unmasked encoder, L2-normalised. Runs in eval mode; the train/eval state is restored."""
        was_training = self.training
        self.eval()
        try:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=imgs.is_cuda):
                latent, _, _ = self.forward_encoder(imgs, 0.0)
            return F.normalize(latent[:, 1:].float().mean(dim=1), dim=-1)
        finally:
            self.train(was_training)


# ---- construction and initialisation ---------------------------------------------------------
# What a pretrained encoder must supply: every tensor of ours under these names. The decoders
# (pixel and caption) start fresh unless the weights hold ones that fit.
ENCODER = ("patch_embed.", "cls_token", "pos_embed", "blocks.", "norm.")
POS_EMBEDS = ("pos_embed", "decoder_pos_embed")
FIX = "pass another --init timm:NAME or --init file:PATH, or --init scratch"


@dataclass(frozen=True)
class LoadReport:
    """What initial weights gave a model, by tensor count."""
    loaded: int
    fresh: int                  # ours that the weights did not give: they keep their init
    unused: int                 # theirs we have no place for (a classifier head, ...)
    resized: tuple[str, ...]    # position embeddings resampled to our grid

    def line(self, init: str) -> str:
        resized = f"; resampled {', '.join(self.resized)}" if self.resized else ""
        return (f"model.init={init}: {self.loaded} tensors loaded, {self.fresh} start fresh, "
                f"{self.unused} unused{resized}")


def build_model(cfg: ModelConfig, vocab_size: int) -> MUG:
    """The named architecture, initialised as `cfg.init` says: "scratch", "timm:NAME" or
    "file:PATH" ("auto" should have been resolved with the run's target by
    `explorer.config.resolve_init`; a config made in code that was not starts from scratch,
    as its default sandbox target would). Raises WeightsUnavailable (one line) when the
    weights cannot be had or do not fit."""
    model = new_model(cfg, vocab_size)
    state = initial_weights(cfg.init)
    if state is not None:
        take, report = fit_state(model.state_dict(), state, cfg.init, cfg.name)
        model.load_state_dict(take, strict=False)
        log.info(report.line(cfg.init))
    return model


def check_init(cfg: ModelConfig) -> LoadReport | None:
    """What `build_model` would load, found before a run writes anything; raises
    WeightsUnavailable as it would. None for a scratch start. Shapes are compared on a
    meta-device model, so no memory is spent on it."""
    state = initial_weights(cfg.init)
    if state is None:
        return None
    # the caption vocabulary is the text model's, not the encoder's business: take theirs
    embed = state.get("caption_decoder.token_embed.weight")
    with torch.device("meta"):
        model = new_model(cfg, embed.shape[0] if isinstance(embed, torch.Tensor) else 1)
    return fit_state(model.state_dict(), state, cfg.init, cfg.name)[1]


def new_model(cfg: ModelConfig, vocab_size: int) -> MUG:
    if cfg.name not in MODEL_CONFIGS:
        raise ValueError(f"unknown model {cfg.name!r}; choose from {', '.join(MODEL_CONFIGS)}")
    return MUG(MODEL_CONFIGS[cfg.name], vocab_size, mask_ratio=cfg.mask_ratio,
               caption_weight=cfg.caption_weight, max_caption_tokens=cfg.max_caption_tokens,
               norm_pix_loss=cfg.norm_pix_loss, drop_path=cfg.drop_path)


def initial_weights(init: str) -> dict[str, torch.Tensor] | None:
    """The state dict `init` names, or None for a scratch start."""
    kind, _, arg = init.partition(":")
    if kind in ("scratch", "auto"):
        return None
    if kind == "timm" and arg:
        return timm_weights(arg)
    if kind == "file" and arg:
        return file_weights(arg)
    raise ValueError(f"model.init must be scratch, timm:NAME or file:PATH, got {init!r}")


def timm_weights(name: str) -> dict[str, torch.Tensor]:
    """timm's pretrained weights `name`, from the Hugging Face cache or downloaded into it."""
    import timm

    if not timm.is_model_pretrained(name):
        raise WeightsUnavailable(f"--init timm:{name}: timm has no pretrained weights by that "
                                 f"name (timm.list_pretrained() lists them); {FIX}")
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    # without network the hub retries for about a minute, a warning a retry: our one line says it
    hub_log.setLevel(logging.ERROR)
    try:
        return timm.create_model(name, pretrained=True).state_dict()
    except Exception as e:  # no network, offline hub, a broken cache: one answer for the user
        raise WeightsUnavailable(
            f"--init timm:{name}: the weights cannot be downloaded (no network?) "
            f"({type(e).__name__}: {first_line(e)}); put them in the Hugging Face cache (HF_HOME), "
            f"pass --init file:PATH, or --init scratch") from None
    finally:
        hub_log.setLevel(level)


def file_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a file: our checkpoint (a dict with "model"), a bare state dict (of a
    MUG or of a timm ViT), torch-saved or .safetensors."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsUnavailable(f"--init file:{path}: no such file; {FIX}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(path, device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not a checkpoint, truncated, pickled objects: all unreadable
        raise WeightsUnavailable(f"--init file:{path}: cannot read it ({type(e).__name__}: {first_line(e)}); {FIX}") from None
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsUnavailable(f"--init file:{path}: holds no state dict; {FIX}")
    # DDP and torch.compile wrap the names they save
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()
            if isinstance(v, torch.Tensor)}


def fit_state(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], init: str,
              name: str) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """The tensors of `state` that fit `own` (names and shapes; position embeddings of another
    grid resampled), and the count. Raises WeightsUnavailable unless the whole encoder fits."""
    take, resized = {}, []
    for k, v in state.items():
        if k not in own:
            continue
        if k in POS_EMBEDS and v.shape != own[k].shape:
            v = _resample_pos_embed(v, own[k].shape)
            resized += [k] if v.shape == own[k].shape else []
        if v.shape == own[k].shape:
            take[k] = v
    misfit = [k for k in own if k.startswith(ENCODER) and k not in take]
    if misfit:
        k = misfit[0]
        theirs = f"is {tuple(state[k].shape)} there" if k in state else "is missing there"
        raise WeightsUnavailable(
            f"--init {init}: does not fit model.name={name}: {len(misfit)} encoder tensors "
            f"do not fit ({k} {theirs}, {tuple(own[k].shape)} here); pick the --model it was "
            f"made for, or {FIX.removeprefix('pass ')}")
    report = LoadReport(loaded=len(take), fresh=len(own) - len(take),
                        unused=len(state) - len(take), resized=tuple(resized))
    return take, report


def _resample_pos_embed(pe: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """[1, 1+g*g, D] -> [1, 1+G*G, D] for our grid G (one class-token slot kept), or `pe`
    unchanged when it is not a square grid of the same width."""
    def grid(tokens: int) -> int:
        g = math.isqrt(max(tokens - 1, 0))
        return g if g and g * g + 1 == tokens else 0

    if pe.ndim != 3 or pe.shape[2] != shape[2] or not grid(pe.shape[1]) or not grid(shape[1]):
        return pe
    old, new = grid(pe.shape[1]), grid(shape[1])
    return resample_abs_pos_embed(pe, [new, new], [old, old], num_prefix_tokens=1)

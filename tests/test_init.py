"""A run's initial weights: `model.init=auto` resolved per target and recorded, and weights
that cannot be had refused in one line before the run directory is written. Offline: the hub
is put in offline mode with an empty cache, and no socket may connect."""
from __future__ import annotations

import io
import socket

import numpy as np
import pytest
import tomli_w
import tomllib
import torch
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console
from typer.testing import CliRunner

from cli import app
from explorer.config import PRETRAINED_INIT, Config, ModelConfig, resolve_init
from explorer.model import mug
from explorer.model.mug import MODEL_CONFIGS, WeightsUnavailable, check_init
from explorer.session import RunDir

WIDE = {"COLUMNS": "400"}   # one error line stays one line

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """The Hugging Face hub in offline mode with an empty cache, and every socket connection
    refused and counted: the test proves no connection was even tried."""
    import huggingface_hub.constants as hf

    tried = []

    def refuse(*args, **kwargs):
        tried.append(args)
        raise OSError("tests make no network connections")

    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield
    assert tried == []


# ---- what "auto" means --------------------------------------------------------------------------

REAL = st.from_regex(r"[a-z][a-z0-9]{0,12}|folder:/[a-z]{1,8}", fullmatch=True)
SANDBOX = st.from_regex(r"sandbox-[a-z]{1,10}", fullmatch=True)


@given(target=st.one_of(REAL, SANDBOX), model=st.sampled_from(sorted(MODEL_CONFIGS)))
def test_auto_is_scratch_for_sandbox_targets_and_pretrained_for_real_ones(target, model):
    cfg = Config()
    cfg.run.target, cfg.model.name = target, model
    assert cfg.model.init == "auto"
    want = "scratch" if target.startswith("sandbox-") else PRETRAINED_INIT[model]
    assert resolve_init(cfg) == want
    for explicit in ("scratch", "timm:some_vit.tag", "file:/some/where.pt"):
        cfg.model.init = explicit
        assert resolve_init(cfg) == explicit


def test_the_real_target_defaults_are_pretrained_where_timm_has_weights():
    assert PRETRAINED_INIT["vit-b16"] == "timm:vit_base_patch16_224.mae"
    assert PRETRAINED_INIT["vit-s16"].startswith("timm:vit_small_patch16_224.")
    assert set(PRETRAINED_INIT) == set(MODEL_CONFIGS)


def _saved(run: RunDir, **model) -> None:
    data = Config().to_dict()
    data["run"].update(target="flowers102", run_dir=str(run.root))
    data["model"].update(model)
    if model.get("init") is None:
        del data["model"]["init"]
    run.root.mkdir(parents=True)
    run.config_path.write_text(tomli_w.dumps(data))


def test_a_saved_config_keeps_its_init_and_an_unsaid_one_is_resolved(tmp_path):
    from explorer.run.assemble import settle_config

    quiet = Console(file=io.StringIO())
    old = RunDir(tmp_path / "old")
    _saved(old, name="vit-b16", init="scratch")      # as configs were written before "auto"
    assert settle_config(old, None, [], quiet).model.init == "scratch"
    unsaid = RunDir(tmp_path / "unsaid")
    _saved(unsaid, name="vit-b16", init=None)        # a config.toml written by hand
    assert settle_config(unsaid, None, [], quiet).model.init == "timm:vit_base_patch16_224.mae"


# ---- weights that cannot be had: one line, nothing written ------------------------------------

@pytest.mark.parametrize("name", ["vit-s16", "vit-b16"])
def test_default_pretrained_weights_unavailable_offline_is_one_line(offline_hub, name):
    init = PRETRAINED_INIT[name]
    with pytest.raises(WeightsUnavailable) as err:
        check_init(ModelConfig(name=name, init=init))
    message = str(err.value)
    assert "\n" not in message and f"--init {init}" in message
    assert "cannot be downloaded" in message and "--init file:PATH" in message
    assert "--init scratch" in message


def test_the_hubs_retry_warnings_are_not_shown_beside_the_one_line(monkeypatch, caplog):
    """Without network the hub warns "Retrying in Ns" at every retry; the user gets our line."""
    import logging

    import timm

    def unreachable(name, pretrained=False, **kw):
        for i in range(3):
            logging.getLogger("huggingface_hub.utils._http").warning(f"Retrying in {2 ** i}s [Retry {i + 1}/5].")
        raise OSError("cannot reach huggingface.co")

    monkeypatch.setattr(timm, "create_model", unreachable)
    before = logging.getLogger("huggingface_hub").level
    with caplog.at_level(logging.WARNING), pytest.raises(WeightsUnavailable, match="cannot be downloaded"):
        mug.timm_weights("vit_small_patch16_224.dino")
    assert not [r for r in caplog.records if "Retrying" in r.getMessage()]
    assert logging.getLogger("huggingface_hub").level == before


def _run(tmp_path, *args: str):
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", "--target", f"folder:{tmp_path / 'no-images'}",
                                      "--run-dir", str(run_dir), *args], env=WIDE)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    errors = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert result.exit_code == 1 and len(errors) == 1, result.output
    assert "Traceback" not in result.output
    return run_dir, errors[0], result.output


def _vit_file(path, **kw):
    import timm

    torch.save(timm.create_model("vit_tiny_patch16_224", pretrained=False, **kw).state_dict(), path)
    return path


def _unavailable(case: str, tmp_path) -> list[str]:
    """`explore run` options whose weights cannot be had."""
    if case == "default offline":
        return ["--model", "vit-s16"]                      # a real target: pretrained by default
    path = {"missing file": lambda: tmp_path / "gone.pt",
            "another shape": lambda: _vit_file(tmp_path / "p16.pt"),   # patch 16, not 8
            "not weights": lambda: tmp_path / "cli.py"}[case]()
    (tmp_path / "cli.py").write_text("print('hello')")
    return ["--model", "tiny-64", "--init", f"file:{path}"]


@pytest.mark.parametrize("case", ["default offline", "missing file", "another shape", "not weights"])
def test_run_refuses_unavailable_weights_in_one_line_before_writing(tmp_path, offline_hub, case):
    run_dir, error, _ = _run(tmp_path, *_unavailable(case, tmp_path))
    assert "--init" in error and "--init scratch" in error
    assert not run_dir.exists()


def test_run_records_the_init_it_resolved(tmp_path, monkeypatch):
    """A real target with no --init starts from the model's pretrained default, and config.toml
    says which. (The weights are timm's architecture on the meta device: shapes only.)"""
    import timm

    import explorer.model.mug as mug

    def weights(name):
        assert name == PRETRAINED_INIT["vit-s16"].removeprefix("timm:")
        with torch.device("meta"):
            return timm.create_model(name.partition(".")[0], pretrained=False).state_dict()

    monkeypatch.setattr(mug, "timm_weights", weights)
    run_dir, error, output = _run(tmp_path, "--model", "vit-s16")
    assert "no-images" in error                     # it went on, to the missing target
    assert "tensors loaded" in output and "unused" in output
    saved = tomllib.loads((run_dir / "config.toml").read_text())
    assert saved["model"]["init"] == PRETRAINED_INIT["vit-s16"]


def test_run_from_a_file_loads_it(tmp_path):
    path = _vit_file(tmp_path / "tiny.pt", img_size=32, patch_size=8, embed_dim=192, depth=6,
                     num_heads=3)
    run_dir, error, output = _run(tmp_path, "--model", "tiny-64", "--init", f"file:{path}")
    assert "no-images" in error
    assert "resampled pos_embed" in output
    saved = tomllib.loads((run_dir / "config.toml").read_text())
    assert saved["model"]["init"] == f"file:{path}"


def test_a_run_with_a_checkpoint_resumes_without_its_starting_weights(tmp_path):
    """resume and eval restore every weight from the checkpoint: the --init weights (a download,
    a file since moved) are not asked for again."""
    from explorer.config import apply_overrides
    from explorer.model.learner import Learner

    cfg = apply_overrides(Config(), ["model.name=tiny-64", "run.device=cpu", "model.init=scratch"])
    run = RunDir(tmp_path / "run")
    first = Learner(cfg, run, [])
    first.trainer.save_checkpoint(run.latest_checkpoint, extra={"explore": {"round": 0}})
    cfg.model.init = f"file:{tmp_path / 'moved-away.pt'}"
    again = Learner(cfg, run, [])
    assert again.rounds_done == 1
    for (name, a), b in zip(first.model.state_dict().items(), again.model.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(WeightsUnavailable, match="moved-away.pt"):
        Learner(cfg, RunDir(tmp_path / "fresh"), [])  # with no checkpoint they are needed


# ---- a frozen encoder for rewards ------------------------------------------------------------------

def test_a_reward_encoder_that_cannot_be_had_is_refused_in_one_line_naming_its_option(tmp_path, offline_hub):
    run_dir, error, _ = _run(tmp_path, "--model", "tiny-64", "--init", "scratch",
                             "--set", f"reward.encoder=file:{tmp_path / 'gone.pt'}")
    assert "reward.encoder=file:" in error and "gone.pt" in error and "--init" not in error
    assert not run_dir.exists()


def test_a_run_says_where_its_rewards_come_from(tmp_path):
    run_dir, error, output = _run(tmp_path, "--model", "tiny-64", "--init", "scratch",
                                  "--set", "reward.encoder=scratch")
    assert "no-images" in error  # (it went on, to the missing target)
    assert "rewards from a frozen encoder, reward.encoder=scratch" in output


def test_rewards_come_from_the_frozen_encoder_which_training_leaves_alone(tmp_path):
    """reward.encoder=file:PATH: the learner's rewards embed with those weights, frozen, however
    the trained model moves; "model" (the default) embeds with the trained model."""
    from PIL import Image

    from explorer.config import apply_overrides
    from explorer.model.data import embed_paths
    from explorer.model.learner import Learner

    paths = []
    for i in range(4):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.effect_noise((40, 40), 30 + 20 * i).convert("RGB").save(paths[-1])
    base = ["model.name=tiny-64", "run.device=cpu", "model.init=scratch"]
    source = Learner(apply_overrides(Config(), base), RunDir(tmp_path / "source"), [])
    torch.save(source.model.state_dict(), tmp_path / "frozen.pt")
    cfg = apply_overrides(Config(), base + [f"reward.encoder=file:{tmp_path / 'frozen.pt'}", "run.seed=1"])
    learner = Learner(cfg, RunDir(tmp_path / "run"), [])
    assert not any(p.requires_grad for p in learner.reward_model.parameters())
    assert not learner.reward_model.training
    expected = embed_paths(source.model, paths, learner.image_size)
    assert np.allclose(learner.embed(paths), expected, atol=1e-5)
    assert not np.allclose(embed_paths(learner.model, paths, learner.image_size), expected, atol=1e-3)
    with torch.no_grad():
        for p in learner.model.parameters():
            p.add_(0.5)  # (what training does to the model, exaggerated)
    assert np.allclose(learner.embed(paths), expected, atol=1e-5)
    plain_learner = Learner(apply_overrides(Config(), base), RunDir(tmp_path / "plain"), [])
    assert plain_learner.reward_model is None
    before = plain_learner.embed(paths)
    with torch.no_grad():
        for p in plain_learner.model.parameters():
            p.add_(0.5)
    assert not np.allclose(plain_learner.embed(paths), before, atol=1e-3)


def test_reward_encoder_is_validated():
    from explorer.config import ConfigError, apply_overrides

    for good in ("model", "scratch", "timm:vit_small_patch16_224.dino", "file:/x/y.pt"):
        assert apply_overrides(Config(), [f"reward.encoder={good}"]).reward.encoder == good
    for bad in ("frozen", "timm:", "file:"):
        with pytest.raises(ConfigError):
            apply_overrides(Config(), [f"reward.encoder={bad}"])

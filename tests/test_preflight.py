"""Before round 0 (explorer/run/preflight.py): the cpu or gpu preset a run gets, chosen, shown and
overridable for any target; on a CPU, the round's estimate from timed passes of its own model,
and a warning when the budget holds too few rounds."""
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from cli import app
from explorer.config import CPU_PRESET, Config, ModelConfig, apply_overrides, get_field, preset_values
from explorer.model.mug import MODEL_CONFIGS, new_model
from explorer.run import preflight
from explorer.run.preflight import (RoundEstimate, RoundWork, choose_preset, estimate_line, round_work,
                                    time_embedding, time_training)

runner = CliRunner()
WIDE = {"COLUMNS": "400"}


@pytest.mark.parametrize("preset, device, cuda, chosen", [
    ("auto", "auto", False, "cpu"),
    ("auto", "auto", True, "gpu"),
    ("auto", "cpu", True, "cpu"),
    ("auto", "cuda:1", False, "gpu"),
    ("cpu", "auto", True, "cpu"),
    ("gpu", "cpu", False, "gpu"),
])
def test_auto_is_cpu_unless_the_run_s_device_is_a_gpu(monkeypatch, preset, device, cuda, chosen):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    cfg = apply_overrides(Config(), [f"run.preset={preset}", f"run.device={device}"])
    assert choose_preset(cfg) == chosen


# ---- the preset a run gets through `explore run`, for any target --------------------------------



def _first_run(tmp_path, monkeypatch, stop_at_build, *args):
    """`explore run` on a folder target of one's own, stopped before its first round, on a
    machine without a GPU; (its config, its output)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    (tmp_path / "mine" / "a").mkdir(parents=True, exist_ok=True)
    seen = stop_at_build()
    result = runner.invoke(app, ["run", "--target", f"folder:{tmp_path / 'mine'}", "--engine", "none",
                                 "--init", "scratch", "--model", "tiny-64", "--run-dir", str(tmp_path / "run"),
                                 "--data-root", str(tmp_path / "data"), *args], env=WIDE)
    assert "stopped by the test" in result.output, result.output
    (cfg,) = seen
    return cfg, result.output


def test_a_folder_target_without_a_gpu_gets_the_cpu_preset_and_says_so(tmp_path, monkeypatch, stop_at_build):
    cfg, out = _first_run(tmp_path, monkeypatch, stop_at_build)
    sized = apply_overrides(Config(), CPU_PRESET)
    assert [get_field(cfg, name) for name in preset_values(CPU_PRESET)] == \
        [get_field(sized, name) for name in preset_values(CPU_PRESET)]
    assert cfg.run.preset == "cpu"
    (line,) = [ln for ln in out.splitlines() if ln.startswith("preset cpu")]
    assert "train.batch_size=32" in line and "train.steps_per_round=30" in line and "--preset gpu" in line
    assert Config.load(tmp_path / "run" / "config.toml").train.batch_size == 32   # what a resume reads


def test_set_and_a_config_file_win_over_the_preset_and_gpu_keeps_the_config_s_values(tmp_path, monkeypatch, stop_at_build):
    cfg, out = _first_run(tmp_path, monkeypatch, stop_at_build, "--set", "train.batch_size=12")
    assert (cfg.train.batch_size, cfg.train.steps_per_round) == (12, 30)
    assert "train.batch_size=12" in out              # the line says the values the run has

    (tmp_path / "mine.toml").write_text("[train]\nsteps_per_round = 7\n")
    cfg, _ = _first_run(tmp_path, monkeypatch, stop_at_build, "--config", str(tmp_path / "mine.toml"))
    assert (cfg.train.batch_size, cfg.train.steps_per_round) == (32, 7)

    cfg, out = _first_run(tmp_path, monkeypatch, stop_at_build, "--preset", "gpu")
    defaults = Config().train
    assert (cfg.run.preset, cfg.train.batch_size, cfg.train.steps_per_round) == \
        ("gpu", defaults.batch_size, defaults.steps_per_round)
    assert any(ln.startswith("preset gpu") for ln in out.splitlines())


# ---- the round's estimate -------------------------------------------------------------------------

def estimate(train_s: float, embed_s: float, images: int = 1000) -> RoundEstimate:
    return RoundEstimate(RoundWork(train_images=images, embed_images=images),
                         train_s_per_image=train_s / images, embed_s_per_image=embed_s / images)


def test_a_round_that_fits_is_said_in_one_plain_line():
    cfg = apply_overrides(Config(), ["run.hours=2", "model.name=tiny-64", "run.preset=cpu"])
    line, warn = estimate_line(cfg, estimate(train_s=100, embed_s=20))
    assert not warn
    assert "a round of tiny-64 takes about 2 min" in line and "holds about 60 rounds" in line


def test_a_round_longer_than_the_budget_says_so_and_what_to_change():
    cfg = apply_overrides(Config(), ["run.hours=1", "run.preset=gpu"])     # vit-b16, batch 256 x 500
    line, warn = estimate_line(cfg, estimate(train_s=30 * 3600, embed_s=3600))
    assert warn
    assert "about 31.0 h" in line and "not one round" in line
    assert "--preset cpu" in line and "--model tiny-64" in line and "train.steps_per_round" in line


def test_too_few_rounds_for_the_cap_or_for_a_policy_to_steer_is_a_warning():
    cfg = apply_overrides(Config(), ["run.hours=1", "run.preset=cpu", "model.name=tiny-64", "run.rounds=20"])
    line, warn = estimate_line(cfg, estimate(train_s=60, embed_s=540))   # 10 min a round: 6 fit
    assert warn and "about 6 of the 20 rounds asked" in line
    assert "--preset cpu" not in line and "--model" not in line and "crawl.queries_per_round" in line
    cfg.run.rounds = 0
    line, warn = estimate_line(cfg, estimate(train_s=60, embed_s=540))
    assert warn and f"about 6 of the {preflight.ENOUGH_ROUNDS} rounds a policy needs" in line
    cfg.run.rounds = 5
    assert not estimate_line(cfg, estimate(train_s=60, embed_s=540))[1]


def test_a_round_s_images_count_training_scoring_and_the_k_nn_check():
    cfg = apply_overrides(Config(), CPU_PRESET + ["train.grad_accum=2"])
    work = round_work(cfg, target_train=1000, knn_images=700)
    assert work.train_images == 30 * 2 * 32
    c = cfg.crawl
    assert work.embed_images == c.queries_per_round * c.results_per_query + 1000 + cfg.reward.background_images + 700


@pytest.mark.usefixtures("one_torch_thread")
def test_timing_a_model_leaves_its_weights_mode_and_random_state_as_they_were():
    model = new_model(ModelConfig(name="tiny-64"), vocab_size=100)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    size = MODEL_CONFIGS["tiny-64"].image_size
    train_s, embed_s = time_training(model, size, 100, 8, batch=2), time_embedding(model, size, batch=2)
    assert embed_s > 0 and train_s > 0        # measured (their sizes are the machine's, not checked)
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)


def test_the_training_probe_times_captions_of_a_web_title_s_length_not_all_padding_real():
    """The caption loss scores the vocabulary at real tokens only: a probe whose every token is
    real times a heavier step than the loop takes."""
    seen = []

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))

        def forward(self, imgs, tokens, token_mask):
            seen.append(token_mask.clone())
            return {"loss": self.w * imgs.mean()}

    time_training(Recorder(), 8, 100, caption_tokens=32, batch=2)
    time_training(Recorder(), 8, 100, caption_tokens=4, batch=2)
    long, short = seen[0], seen[-1]
    assert long.shape == (2, 32) and long.sum(dim=1).tolist() == [preflight.PROBE_CAPTION_TOKENS] * 2
    assert long[:, 0].all() and not long[:, -1].any()          # real tokens first, as tokenize pads
    assert short.shape == (2, 4) and short.all()               # shorter than a title: all real


def test_the_probe_s_batch_grows_until_a_pass_is_long_enough_or_the_round_s_batch(monkeypatch):
    """Short passes time torch's per-op costs more than the images: the batch doubles while a
    pass is short, never past the round's own batch, and the fastest timed pass counts."""
    clock = [0.0]
    monkeypatch.setattr(preflight.time, "perf_counter", lambda: clock[0])

    def make(per_image, overhead, noise=()):
        sizes, extra = [], list(noise)

        def one_pass(b):
            sizes.append(b)
            clock[0] += overhead + per_image * b + (extra.pop(0) if extra else 0.0)
        return one_pass, sizes

    one_pass, sizes = make(per_image=0.01, overhead=0.2)
    per_image = preflight.sized_passes(one_pass, 8, 256)
    # 8, 16, 32 (0.52 s), 64 (0.84 s) are short; 128 takes 1.48 s: timed there, after it warmed
    assert sizes == [8, 16, 32, 64, 128] + [128] * preflight.PROBE_PASSES
    assert per_image == pytest.approx((0.2 + 1.28) / 128)
    one_pass, sizes = make(per_image=0.01, overhead=0.2, noise=[0, 0, 0, 0.5, 0.0, 0.3])
    assert preflight.sized_passes(one_pass, 8, 32) == pytest.approx((0.2 + 0.32) / 32)   # the fastest
    assert sizes == [8, 16, 32] + [32] * preflight.PROBE_PASSES   # capped: a warm pass at 32, then timed
    one_pass, sizes = make(per_image=0.5, overhead=0.0)
    assert preflight.sized_passes(one_pass, 8, 32) == pytest.approx(0.5)
    assert sizes == [8] * (1 + preflight.PROBE_PASSES)                # a long pass: no growth


def test_the_estimate_is_printed_on_a_cpu_only(monkeypatch):
    from rich.console import Console

    cfg = apply_overrides(Config(), ["run.hours=1", "model.name=tiny-64"])
    monkeypatch.setattr(preflight, "estimate_round", lambda *a: estimate(train_s=4000, embed_s=0))
    for device, said in (("cuda", ""), ("cpu", "warning: on cpu a round of tiny-64")):
        console = Console(record=True, width=400)
        learner = SimpleNamespace(device=torch.device(device))
        preflight.say_round_estimate(cfg, learner, None, console)
        out = console.export_text()
        assert said in out and (said or out == "")

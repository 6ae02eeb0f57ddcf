from explorer.config import Config, apply_overrides
import pytest


def test_toml_round_trip(tmp_path):
    cfg = apply_overrides(Config(), ["train.lr=0.001", "crawl.allow=127.0.0.1:8000,localhost:9",
                                     "train.bf16=false", "eval.label_fractions=1.0,0.05"])
    cfg.save(tmp_path / "config.toml")
    back = Config.load(tmp_path / "config.toml")
    assert back == cfg
    assert back.train.lr == 0.001 and back.train.bf16 is False
    assert back.crawl.allow == ["127.0.0.1:8000", "localhost:9"]
    assert back.eval.label_fractions == (1.0, 0.05)


@pytest.mark.parametrize("bad", ["train.nope=1", "nosection.x=1", "train.lr", "train.bf16=maybe"])
def test_bad_override_is_an_error(bad):
    with pytest.raises(ValueError):
        apply_overrides(Config(), [bad])


# ---- every field is checked: on load, on --set, and in one line --------------------------------
import dataclasses
import math

from hypothesis import given, settings, strategies as st

from explorer.config import (RULES, SANDBOX_PRESET, SECTIONS, Choice, ConfigError, Ints, Num,
                             validate)
from explorer.errors import UserError

FIELDS = sorted(f"{section}.{f.name}" for section in SECTIONS
                for f in dataclasses.fields(getattr(Config(), section)))
INT_FIELDS = [n for n in FIELDS if isinstance(RULES.get(n), Ints)]
NUM_FIELDS = [n for n in FIELDS if isinstance(RULES.get(n), Num)]
CHOICE_FIELDS = [n for n in FIELDS if isinstance(RULES.get(n), Choice)]


def test_every_field_has_a_rule():
    """A field added later must say what it accepts, here, or this fails."""
    assert [n for n in FIELDS if n not in RULES] == []
    assert [n for n in RULES if n not in FIELDS] == []   # no rule outlives its field


def test_the_defaults_and_the_sandbox_preset_are_allowed():
    validate(Config())
    validate(apply_overrides(Config(), SANDBOX_PRESET))


def refused(name: str, typed: str) -> str:
    """`--set name=typed` must be a ConfigError (a UserError): one line naming field and value."""
    with pytest.raises(ConfigError) as info:
        apply_overrides(Config(), [f"{name}={typed}"])
    message = str(info.value)
    assert isinstance(info.value, UserError)
    shown = typed if typed else "''"
    assert message.startswith(f"{name}={shown}: ") and "must be" in message, message
    assert "\n" not in message
    return message


def _outside_ints(rule: Ints):
    return st.integers(max_value=rule.lo - 1) | st.integers(min_value=rule.hi + 1)


def _outside_num(rule: Num):
    below = st.floats(max_value=rule.lo, exclude_max=not rule.above, allow_nan=False)
    above = st.floats(min_value=rule.hi, exclude_min=not rule.below, allow_nan=False)
    return below | above | st.just(math.nan)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_out_of_range_number_is_refused_in_one_line(data):
    name = data.draw(st.sampled_from(INT_FIELDS + NUM_FIELDS))
    rule = RULES[name]
    value = data.draw(_outside_ints(rule) if isinstance(rule, Ints) else _outside_num(rule))
    message = refused(name, str(value))
    if isinstance(rule, Ints):
        assert f"{rule.lo:_} to {rule.hi:_}" in message   # the allowed range is said


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_number_in_range_is_taken(data):
    name = data.draw(st.sampled_from(INT_FIELDS + NUM_FIELDS))
    rule = RULES[name]
    if isinstance(rule, Ints):
        value = data.draw(st.integers(rule.lo, rule.hi))
    else:
        value = data.draw(st.floats(rule.lo, rule.hi, exclude_min=rule.above, exclude_max=rule.below))
    section, key = name.split(".")
    cfg = apply_overrides(Config(), [f"{name}={value!r}"])
    assert getattr(getattr(cfg, section), key) == value


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_string_outside_a_choice_is_refused(data):
    name = data.draw(st.sampled_from(CHOICE_FIELDS))
    value = data.draw(st.text("abcdefghijklmnopqrstuvwxyz_-0123456789", min_size=1, max_size=12)
                      .filter(lambda v: v not in RULES[name].options))
    refused(name, value)
    for option in RULES[name].options:
        apply_overrides(Config(), [f"{name}={option}"])


def test_the_issue_examples_are_refused():
    refused("crawl.concurrency", "0")
    refused("crawl.per_host", "0")
    assert "grad_accum" in refused("train.batch_size", "100000")
    refused("crawl.workers", "-1")
    refused("crawl.jpeg_quality", "500")
    refused("crawl.total_timeout_s", "0")


@pytest.mark.parametrize("name, bad, good", [
    ("run.target", "folder:", "folder:/data/birds"),
    ("run.target", "sandbox-", "sandbox-flowers"),
    ("run.target", "", "flowers102"),
    ("crawl.engine", "corpus:", "corpus:/data/lake.parquet"),
    ("crawl.engine", "bing", "ddgs"),
    ("policy.vocab", "file:", "file:/data/words.txt"),
    ("model.init", "timm:", "timm:vit_base_patch16_224.mae"),
    ("model.init", "imagenet", "scratch"),
    ("run.device", "cuda:x", "cuda:1"),
    ("crawl.allow", "localhost", "127.0.0.1:8000,[::1]:9000"),
    ("crawl.allow", "127.0.0.1:70000", "localhost:1"),
    ("sandbox.host", "0.0.0.0", "127.0.0.1"),
    ("sandbox.forbidden_hosts", "127.0.0.2,10.0.0.1", "127.0.0.2,::1,::ffff:127.0.0.3"),
    ("train.betas", "0.9", "0.9,0.999"),
    ("train.betas", "0.9,1.0", "0,0.5"),
    ("eval.label_fractions", "1.0,0", "1.0,0.01"),
    ("eval.probe_c", "", "0.5"),
    ("train.bf16", "maybe", "off"),
    ("crawl.search_region", "USA", "wt-wt"),
    ("crawl.user_agent", "", "my-crawler/1.0 (me@example.org)"),
    ("crawl.ray_address", "head-node", "10.0.0.5:6379"),
    ("crawl.ray_address", "http://head:6379", "ray://head:10001"),
])
def test_spec_strings_and_lists_are_checked_for_their_form(name, bad, good):
    refused(name, bad)
    apply_overrides(Config(), [f"{name}={good}"])


def test_a_config_file_with_a_bad_value_names_the_file(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("[crawl]\nconcurrency = 0\n")
    with pytest.raises(ConfigError, match=r"^.*config\.toml: crawl\.concurrency=0: must be an integer from 1 to"):
        Config.load(path)


@pytest.mark.parametrize("toml", [
    "[crawl]\nconcurrency = 2.5\n",        # refused, not truncated to 2
    "[crawl]\nconcurrency = true\n",
    "[train]\nbf16 = \"maybe\"\n",
    "[run]\ntarget = 5\n",
    "[train]\nbetas = [0.9, \"x\"]\n",
    "run = 3\n",
    "[to_dict]\nx = 1\n",
    "[crawl\n",
])
def test_a_config_file_of_the_wrong_shape_is_one_config_error(tmp_path, toml):
    path = tmp_path / "config.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        Config.load(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_batch_shares_cannot_all_be_zero():
    with pytest.raises(ConfigError, match="share"):
        apply_overrides(Config(), ["train.target_share=0", "train.candidate_share=0", "train.replay_share=0"])


def test_choices_match_the_registries_they_name():
    from explorer.model.mug import MODEL_CONFIGS
    from explorer.sandbox.faults import PROFILES
    from policies.registry import POLICIES  # importing the package registers every policy
    assert set(RULES["model.name"].options) == set(MODEL_CONFIGS)
    assert set(RULES["sandbox.profile"].options) == set(PROFILES)
    assert set(RULES["policy.name"].options) == set(POLICIES)


def test_a_retired_field_still_loads_from_an_old_run_but_cannot_be_set(tmp_path):
    """A run made before eval.val_share was retired resumes; --set of it says what replaced it."""
    from explorer.config import RETIRED
    path = tmp_path / "config.toml"
    Config().save(path)
    for name in RETIRED:
        section, _, key = name.partition(".")
        path.write_text(path.read_text().replace(f"[{section}]\n", f"[{section}]\n{key} = 0.2\n", 1))
    assert Config.load(path) == Config()
    for name, why in RETIRED.items():
        assert name not in FIELDS                  # retired means gone from the dataclasses
        with pytest.raises(ConfigError, match="retired") as info:
            apply_overrides(Config(), [f"{name}=0.3"])
        assert why in str(info.value)

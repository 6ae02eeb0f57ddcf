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

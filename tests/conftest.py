import os

import pytest

# No test downloads: the Hugging Face hub (timm weights, text models) answers from the local
# cache or refuses, before anything imports it.
os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="module")
def one_torch_thread():
    """Model tests on a shared 2-core machine: two intra-op threads contend and run ~7x
    slower than one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def stop_at_build(monkeypatch):
    """Call it to stop `explore run` before anything is built: it returns the list the run's
    settled configs are collected in, and the command then ends with one UserError line,
    "stopped by the test"."""
    from explorer.errors import UserError
    from explorer.run import assemble

    def install() -> list:
        seen = []

        def build(run, cfg, *args):
            seen.append(cfg)
            raise UserError("stopped by the test before the first round")

        monkeypatch.setattr(assemble, "build", build)
        return seen

    return install

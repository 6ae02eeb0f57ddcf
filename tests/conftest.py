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

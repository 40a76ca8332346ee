import pytest
import torch

# Test models are tiny: one thread is faster than two (no sync overhead), and leaves
# the second core to subprocesses the tests start.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)

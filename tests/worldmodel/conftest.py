import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny():
    from world2act.worldmodel import WorldModel

    torch.manual_seed(0)
    return WorldModel.from_config("tiny").eval()

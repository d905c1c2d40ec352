import os
import sys

import pytest
import torch

# The shared test helpers (fill_laws, philox_reference, common) live in tests/helpers/, which is
# not a package: put it on sys.path so that test files import them as top-level modules.
HELPERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "helpers")
if HELPERS not in sys.path:
    sys.path.insert(0, HELPERS)


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)

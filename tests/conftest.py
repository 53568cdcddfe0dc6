"""Suite-level fixtures (the helpers the tests import are in plugin_commands.py)."""

from pathlib import Path

import pytest

from ctsvd_testdata.shared import data_dir


@pytest.fixture(scope="session")
def shared_data():
    """``shared_data(name)``: the folder ../shared/data/<name> beside this clone; the test skips without it."""
    def folder(name: str) -> Path:
        found = data_dir(name)
        if found is None:
            pytest.skip(f"../shared/data/{name} is not beside this clone")
        return found
    return folder

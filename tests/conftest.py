"""Suite-level fixtures: where things are, and how to run a plugin's command."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ctsvd_testdata.shared import data_dir

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PLUGINS = {  # distribution → console command
    "pl-dcm-anon": "dcm_anon",
    "pl-dicom2matrix": "dicom2matrix",
    "pl-ssvd-denoise": "ssvd_denoise",
    "pl-svd-render": "svd_render",
}
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def run_command(command: str, *args, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run one plugin the way ChRIS does: its console command with flags, inputdir, outputdir."""
    return subprocess.run([str(BIN / command), *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=timeout)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " ERROR: " in line]


def source(inputdir: Path, label: str) -> str:
    """The relative path of the input a log or report names by label (its position among the
    input files in name order, as every stage numbers them; see ctsvd_common.inputnames).
    Names the suite's own stages gave (series-001/0001.dcm) are shown as they are."""
    from ctsvd_common.dicom import input_files
    from ctsvd_common.inputnames import LABEL, label_position

    if not LABEL.fullmatch(label):
        return label
    return input_files(inputdir)[label_position(label) - 1].relative_to(inputdir).as_posix()


def all_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


@pytest.fixture(scope="session")
def shared_data():
    """``shared_data(name)``: the folder ../shared/data/<name> beside this clone; the test skips without it."""
    def folder(name: str) -> Path:
        found = data_dir(name)
        if found is None:
            pytest.skip(f"../shared/data/{name} is not beside this clone")
        return found
    return folder

"""Suite-level fixtures: where things are, and how to run a plugin's command."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SHARED_DATA = ROOT.parent / "shared" / "data"
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


def all_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not beside this clone")
    return SHARED_DATA

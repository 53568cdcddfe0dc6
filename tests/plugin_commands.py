"""Where the suite's things are, and how the suite-level tests run a plugin's command as ChRIS does.

Imported by the tests beside it (the root pytest configuration puts this folder on the path);
fixtures live in conftest.py."""

import os
import subprocess
import sys
from pathlib import Path

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

"""The files the runner ships as package data: the pipeline files, the JSON made
from them, and the plugins' checked-in ChRIS descriptors.

``ctsvd-pipeline descriptors`` and ``ctsvd-pipeline pipelines`` rewrite them in place,
which in the editable install of a clone is the clone's own copy.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

# A folder on disk (the package is never imported from a zip): the maintenance commands write here.
PACKAGE = Path(str(resources.files(__package__)))
PIPELINES = PACKAGE / "pipelines"
PIPELINE_JSON = PIPELINES / "json"
DESCRIPTORS = PACKAGE / "descriptors"
DEFAULT_PIPELINE = PIPELINES / "ct-denoise.yml"

"""pl-dicom2matrix: DICOM CT series to float32 Hounsfield volumes with a manifest."""

from ctsvd_common.cli import distribution_version

__version__ = distribution_version("pl-dicom2matrix")

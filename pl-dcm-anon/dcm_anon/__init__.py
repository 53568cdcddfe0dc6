"""De-identify DICOM files by the DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile."""

from ctsvd_common.cli import distribution_version

__version__ = distribution_version("pl-dcm-anon")

"""Shared plumbing of the CT SVD-denoising ChRIS plugins: the data contract,
atomic writes, run reports and DICOM file reading."""

__version__ = "0.1.0"

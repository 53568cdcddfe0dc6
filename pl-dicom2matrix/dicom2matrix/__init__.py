"""pl-dicom2matrix: DICOM CT series to float32 Hounsfield volumes with a manifest."""

__version__ = "0.1.0"

"""De-identify DICOM files by the DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile."""

__version__ = "0.1.0"

"""Fixtures of pl-dicom2matrix's unit tests."""

from __future__ import annotations

import pytest

from dicom2matrix.scan import Image

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


@pytest.fixture
def make_image():
    """An :class:`Image` of an axial 4 × 4 CT slice of series 1; keywords replace any field."""
    count = iter(range(1, 10_000))

    def make(**fields) -> Image:
        n = next(count)
        values = dict(
            file=f"slice-{n:04d}.dcm", frame=None, study_uid="1.2.3", series_uid="1.2.3.4",
            frame_of_reference_uid="1.2.3.5", sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
            sop_instance_uid=f"1.2.3.6.{n}", modality="CT", series_number="1", description="",
            image_type=("ORIGINAL", "PRIMARY", "AXIAL"), stack_id="", instance_number=n,
            patient_identity_removed=True, rows=4, cols=4, orientation=AXIAL, position=(0.0, 0.0, float(n)),
            pixel_spacing=(0.5, 0.5), thickness=1.0, gantry_tilt=None, slope=1.0, intercept=-1024.0,
            rescale_type="HU", photometric="MONOCHROME2", bits_stored=16, signed=True, padding=None,
            window=None, transfer_syntax="1.2.840.10008.1.2.1", native=None,
        )
        values.update(fields)
        return Image(**values)

    return make

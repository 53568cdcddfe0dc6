"""The anonymizer's test input: the synthetic CT phantom, laid out as a nested input tree.

The series and its made-up PHI come from :mod:`ctsvd_testdata.phantom`; this module
only moves the slices into LAYOUT and adds what the anonymizer tests need on top.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import ImplicitVRLittleEndian

from ctsvd_testdata.phantom import PRIVATE_CREATOR, UID_ROOT, DemoIdentity, DemoSeries, write_demo_series

IDENTITY = DemoIdentity()
PATIENT_NAME, PATIENT_ID = IDENTITY.patient_name, IDENTITY.patient_id
INSTITUTION, STATION, STUDY_DATE = IDENTITY.institution, IDENTITY.station_name, IDENTITY.study_date

# Relative paths of the four slices: nested, plus one at the top level.
LAYOUT = ["case01/ct/slice-001.dcm", "case01/ct/slice-002.dcm",
          "case01/ct/part2/slice-003.dcm", "slice-004.dcm"]

# dcm_anon names each output by its series and its place among the inputs (in name order), never
# after the input: the four slices are one series.
OUTPUT_OF = {rel: f"series-001/{i:04d}.dcm" for i, rel in enumerate(sorted(LAYOUT), 1)}

GEOMETRY = ["Rows", "Columns", "PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient",
            "SliceThickness", "SliceLocation", "RescaleIntercept", "RescaleSlope", "RescaleType",
            "WindowCenter", "WindowWidth", "BitsAllocated", "BitsStored", "HighBit",
            "PixelRepresentation", "PhotometricInterpretation", "SamplesPerPixel", "Modality",
            "InstanceNumber", "KVP", "ConvolutionKernel"]


@dataclass
class Series:
    root: Path
    files: list[Path]                      # absolute input paths, in LAYOUT order (= phantom slice order)
    demo: DemoSeries                       # the phantom's ground truth (HU, identity, UIDs)

    @property
    def study_uid(self) -> str:
        return self.demo.uids["study"]

    @property
    def sop_uids(self) -> list[str]:
        return self.demo.uids["sop_instances"]

    @property
    def original_uids(self) -> list[str]:
        u = self.demo.uids
        return [u["study"], u["series"], u["frame_of_reference"], *u["sop_instances"]]

    @property
    def phi_strings(self) -> list[str]:
        """Every string that must not survive de-identification.

        The phantom's list, plus the private creator (the whole private block must go) and
        the institution's distinctive words (a partly kept name is still a leak).
        """
        words = [w for w in self.demo.identity.institution.split() if len(w) >= 6]
        return [*self.demo.phi_strings(), PRIVATE_CREATOR, *words]

    @property
    def pixels(self) -> list[bytes]:
        """The stored values, rebuilt from the phantom's HU rather than read back from the files."""
        stored = np.rint((self.demo.hu.astype(np.float64) - self.demo.rescale_intercept)
                         / self.demo.rescale_slope)
        return [s.astype("<i2").tobytes() for s in stored]


def write_series(root: Path, layout: list[str] = LAYOUT) -> Series:
    """Write the phantom's slices under ``root`` at ``layout``; the last is Implicit VR Little Endian."""
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root.parent) as tmp:
        # 32x32 keeps each slice's pixel data at 2048 bytes, which the truncation test relies on.
        demo = write_demo_series(Path(tmp), slices=len(layout), size=32, noise_hu=25.0, seed=0,
                                 identity=IDENTITY)
        files = []
        for i, (src, rel) in enumerate(zip(demo.files, layout)):
            ds = pydicom.dcmread(src)
            # What the phantom does not do but real files do, so the tests can see it undone:
            # a preamble with content (some systems put a TIFF header there, here with PHI),
            # another implementation's class UID, and one file in the other transfer syntax.
            ds.preamble = (b"II*\x00" + PATIENT_NAME.encode() + b"\x00" * 128)[:128]
            ds.file_meta.ImplementationClassUID = UID_ROOT + "999"
            if i == len(layout) - 1:
                ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(path, enforce_file_format=True)   # encoded as its transfer syntax says
            files.append(path)
    demo.files = files                     # the phantom's own copies go with tmp
    return Series(root, files, demo)


def output_dicoms(outdir: Path) -> list[Path]:
    return sorted(p for p in outdir.rglob("*.dcm") if "tag-report" not in p.relative_to(outdir).parts)

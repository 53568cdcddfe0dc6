"""The messy CT exam fixture, checked with plain pydicom against its own ground truth."""

from __future__ import annotations

import math
import time

import numpy as np
import pydicom
import pytest
from pydicom.errors import InvalidDicomError
from pydicom.fileset import FileSet
from pydicom.pixels import pixel_array

from ctsvd_testdata import messy_exam as M
from ctsvd_testdata.phantom import CT_IMAGE_STORAGE, UID_ROOT

SLICES, SIZE = 8, 64



@pytest.fixture(scope="module")
def exam(tmp_path_factory):
    start = time.perf_counter()
    out = M.write_messy_exam(tmp_path_factory.mktemp("messy") / "exam", size=SIZE, slices=SLICES,
                             seed=0)
    out.seconds = time.perf_counter() - start
    return out


@pytest.fixture(scope="module")
def ignore_invalid_values():
    """Read malformed values as they are (the converter's own reading mode)."""
    settings = pydicom.config.settings
    before = settings.reading_validation_mode
    settings.reading_validation_mode = pydicom.config.IGNORE
    yield
    settings.reading_validation_mode = before


def _rescale(ds) -> tuple[float, float]:
    """Slope and intercept: the functional groups' for Enhanced CT, else the top level's."""
    if "SharedFunctionalGroupsSequence" in ds:
        item = ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
    else:
        item = ds
    return float(item.RescaleSlope), float(item.RescaleIntercept)


def _position(ds, frame: int) -> np.ndarray:
    if "PerFrameFunctionalGroupsSequence" in ds:
        ds = ds.PerFrameFunctionalGroupsSequence[frame].PlanePositionSequence[0]
    ipp = ds.ImagePositionPatient
    return np.array([float(v) for v in ipp])


def _orientation(ds) -> np.ndarray:
    if "SharedFunctionalGroupsSequence" in ds:
        ds = ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0]
    iop = ds.ImageOrientationPatient
    return np.array([float(v) for v in iop])


def _decode(exam, vol, plugin: str = ""):
    """HU of each slice of ``vol`` as decoded by pydicom 3, in the ground truth's order."""
    datasets = {rel: pydicom.dcmread(exam.path(rel)) for rel in {r for r, _ in vol.frames}}
    slices = []
    for rel, frame in vol.frames:
        ds = datasets[rel]
        arr = pixel_array(ds, decoding_plugin=plugin)
        if int(ds.get("NumberOfFrames", 1)) > 1:
            arr = arr[frame]
        slope, intercept = _rescale(ds)
        slices.append((arr.astype(np.float64) * slope + intercept).astype(np.float32))
    return np.stack(slices), datasets


# --------------------------------------------------------------------------- the whole tree


def test_is_fast_and_every_file_is_accounted_for_once(exam):
    assert exam.seconds < 15            # about 1 s on one core; generous for a loaded CI
    on_disk = {p.relative_to(exam.root).as_posix() for p in exam.root.rglob("*") if p.is_file()}
    in_volumes = [f for v in exam.volumes for f in v.files]
    assert len(in_volumes) == len(set(in_volumes))
    parts = [set(in_volumes), set(exam.skipped), set(exam.failed)]
    assert sum(map(len, parts)) == len(on_disk) and set().union(*parts) == on_disk
    assert set(exam.skipped.values()) == set(M.SKIP_CATEGORIES)
    assert sorted(exam.failed.values()) == sorted(M.FAIL_CATEGORIES)
    assert [v.label for v in exam.volumes] == list(M.VOLUME_LABELS)


def test_layout_uses_one_readable_folder_per_item(exam):
    folders = {p.name for p in exam.root.iterdir() if p.is_dir()}
    assert folders == {
        "01-localizer", "02-reconstructions", "03-exam-summary-screenshot",
        "04-secondary-capture-burned-in", "05-dicomdir-cd", "06-tilted-gantry-gap",
        "07-mixed-thickness-one-series", "08-transfer-syntaxes", "09-enhanced-ct-multiframe",
        "10-enhanced-ct-one-frame-files", "11-malformed-values", "12-truncated-slice",
        "13-cr-radiograph", "13-mr-series", "14-structured-report"}
    assert {p.name for p in (exam.root / "08-transfer-syntaxes").iterdir()} == {
        "explicit-vr-little-endian", "rle-lossless", "jpeg-ls-lossless", "jpeg-lossless-sv1",
        "jpeg2000-lossless", "jpeg-baseline"}


def test_uids_are_deterministic_distinct_and_shared_where_they_should_be(exam):
    assert all(u.startswith(UID_ROOT) and len(u) <= 64 for u in exam.uids.values())
    assert len(set(exam.uids.values())) == len(exam.uids)
    ct_series, studies, frames = set(), set(), set()
    for v in exam.volumes:
        ds = pydicom.dcmread(exam.path(v.files[0]), stop_before_pixels=True)
        assert ds.SeriesInstanceUID == v.series_uid
        ct_series.add(v.series_uid)
        studies.add(ds.StudyInstanceUID)
        frames.add(ds.FrameOfReferenceUID)
    assert len(ct_series) == len(exam.volumes) - 1        # only the mixed-thickness pair shares one
    assert exam.volume("mixed-4mm").series_uid == exam.volume("mixed-7mm-add").series_uid
    assert len(studies) == 1 and len(frames) == 1


def test_file_names_are_not_in_slice_order(exam):
    for v in exam.volumes:
        if len(v.files) > 2:
            assert v.files != sorted(v.files), v.label


# --------------------------------------------------------------------------- volumes


@pytest.mark.parametrize("label", M.VOLUME_LABELS)
def test_volume_decodes_to_its_hu_in_order_along_the_normal(exam, label):
    vol = exam.volume(label)
    hu, datasets = _decode(exam, vol)
    assert vol.hu.dtype == np.float32 and hu.shape == vol.hu.shape
    assert vol.hu.shape[1:] == (SIZE, SIZE)
    if vol.lossless:
        assert vol.tolerance_hu == 0.0
        assert np.array_equal(hu, vol.hu)                    # to the last bit
    else:
        err = np.abs(hu - vol.hu)
        assert err.max() <= vol.tolerance_hu == M.BASELINE_TOLERANCE_HU
        assert err.mean() <= 1.5 * M.BASELINE_SLOPE

    for ds in datasets.values():
        assert ds.file_meta.TransferSyntaxUID == vol.transfer_syntax
        assert ds.SeriesInstanceUID == vol.series_uid
        assert ds.Modality == "CT"
    positions = np.stack([_position(datasets[rel], f) for rel, f in vol.frames])
    assert np.array_equal(positions, vol.positions_mm)
    normal = np.cross(vol.orientation[:3], vol.orientation[3:])
    along = positions @ normal
    assert np.all(np.diff(along) > 0)
    steps = np.diff(along) / vol.slice_spacing_mm
    gaps = vol.missing_slices
    assert np.allclose(np.sort(steps), [1.0] * (len(steps) - gaps) + [2.0] * gaps)
    assert len(vol.hu) >= M.MIN_VOLUME_SLICES


def test_lossless_transfer_syntaxes_hold_the_same_pixels(exam):
    reference = exam.volume("ts-explicit-vr-little-endian").hu
    for label in M.VOLUME_LABELS:
        if label.startswith("ts-") and exam.volume(label).lossless:
            assert np.array_equal(exam.volume(label).hu, reference)
    baseline = exam.volume("ts-jpeg-baseline").hu
    assert np.abs(baseline - reference).max() <= M.BASELINE_SLOPE / 2      # 8-bit rounding only


@pytest.mark.parametrize("label", ["ts-jpeg-lossless-sv1", "ts-jpeg-ls-lossless",
                                   "ts-jpeg2000-lossless", "ts-rle-lossless", "ts-jpeg-baseline"])
def test_compressed_series_decode_alike_with_every_installed_decoder(exam, label):
    """The home-made JPEG Lossless encoder checked by independent decoders (libjpeg, GDCM)."""
    vol = exam.volume(label)
    decoder = pydicom.pixels.get_decoder(vol.transfer_syntax)
    plugins = sorted(decoder.available_plugins)
    assert plugins
    for plugin in plugins:
        hu, _ = _decode(exam, vol, plugin)
        if vol.lossless:
            assert np.array_equal(hu, vol.hu), plugin
        else:
            assert np.abs(hu - vol.hu).max() <= vol.tolerance_hu, plugin


def test_three_reconstructions_of_one_acquisition(exam):
    vols = [exam.volume(k) for k in ("recon-soft-tissue", "recon-lung", "recon-5mm")]
    headers = [pydicom.dcmread(exam.path(v.files[0]), stop_before_pixels=True) for v in vols]
    assert len({h.SeriesInstanceUID for h in headers}) == 3
    shared = {(h.StudyInstanceUID, h.FrameOfReferenceUID, h.AcquisitionNumber) for h in headers}
    assert len(shared) == 1
    assert [h.ConvolutionKernel for h in headers] == ["B30f", "B70f", "B30f"]
    assert [v.slice_thickness_mm for v in vols] == [2.5, 2.5, 5.0]
    assert vols[1].transfer_syntax == pydicom.uid.ImplicitVRLittleEndian
    assert {exam.path(f).parent.name for v in vols for f in v.files} == {"02-reconstructions"}
    # the lung kernel is the noisier one
    assert np.std(vols[1].hu - vols[0].hu) > 10


def test_tilted_series_is_tilted_with_one_missing_slice(exam):
    vol = exam.volume("tilted-gap")
    assert vol.tilt_deg == pytest.approx(M.TILT_DEG) and vol.gantry_detector_tilt_deg == M.TILT_DEG
    assert vol.missing_slices == 1 and len(vol.files) == SLICES
    dsets = [pydicom.dcmread(exam.path(f), stop_before_pixels=True) for f in vol.files]
    assert {float(ds.GantryDetectorTilt) for ds in dsets} == {M.TILT_DEG}
    positions = np.stack([_position(ds, 0) for ds in dsets])
    normal = np.cross(*_orientation(dsets[0]).reshape(2, 3))
    step = positions[1] - positions[0]
    assert np.allclose(step[:2], 0) and step[2] > 0                 # the table moves along z
    angle = math.degrees(math.acos(np.dot(step, normal) / np.linalg.norm(step)))
    assert angle == pytest.approx(M.TILT_DEG, abs=1e-6)
    dz = np.diff(positions[:, 2])
    assert sorted(np.round(dz / dz.min(), 9)) == [1.0] * (SLICES - 2) + [2.0]
    assert 0 < int(np.argmax(dz)) < SLICES - 2                       # the gap is inside


def test_mixed_thickness_is_one_series_of_two_stacks(exam):
    thin, add = exam.volume("mixed-4mm"), exam.volume("mixed-7mm-add")
    assert len(thin.files) == SLICES and len(add.files) >= M.MIN_VOLUME_SLICES
    assert exam.path(thin.files[0]).parent == exam.path(add.files[0]).parent
    for vol, thickness, image_type in ((thin, 4.0, ["ORIGINAL", "PRIMARY", "AXIAL"]),
                                       (add, 7.0, ["DERIVED", "PRIMARY", "AXIAL", "ADD"])):
        for f in vol.files:
            ds = pydicom.dcmread(exam.path(f), stop_before_pixels=True)
            assert float(ds.SliceThickness) == thickness == vol.slice_thickness_mm
            assert list(ds.ImageType) == image_type
    z_thin, z_add = thin.positions_mm[:, 2], add.positions_mm[:, 2]
    assert z_thin[0] <= z_add[0] and z_add[-1] <= z_thin[-1]          # overlapping positions


def test_enhanced_multiframe_has_rescale_only_in_functional_groups(exam):
    vol = exam.volume("enhanced-multiframe")
    assert vol.multiframe and len(vol.files) == 1
    ds = pydicom.dcmread(exam.path(vol.files[0]))
    assert ds.SOPClassUID == M.ENHANCED_CT_IMAGE_STORAGE == ds.file_meta.MediaStorageSOPClassUID
    assert int(ds.NumberOfFrames) == SLICES
    assert "RescaleSlope" not in ds and "RescaleIntercept" not in ds
    assert "ImagePositionPatient" not in ds
    shared = ds.SharedFunctionalGroupsSequence[0]
    for name in ("PixelMeasuresSequence", "PlaneOrientationSequence",
                 "PixelValueTransformationSequence", "CTImageFrameTypeSequence"):
        assert name in shared
    pvt = shared.PixelValueTransformationSequence[0]
    assert float(pvt.RescaleIntercept) == -1024.0 and float(pvt.RescaleSlope) == 1.0
    assert pvt.RescaleType == "HU"
    contents = [f.FrameContentSequence[0] for f in ds.PerFrameFunctionalGroupsSequence]
    assert {c.StackID for c in contents} == {"1"}
    stack = [int(c.InStackPositionNumber) for c in contents]
    assert sorted(stack) == list(range(1, SLICES + 1)) and stack != sorted(stack)
    frames = [f for _, f in vol.frames]
    assert [stack[f] for f in frames] == list(range(1, SLICES + 1))
    # a naive reader (top-level rescale only, file order) is 1024 HU off and out of order
    naive = pydicom.pixels.apply_rescale(ds.pixel_array, ds)
    assert np.array_equal(naive[frames].astype(np.float32) - 1024.0, vol.hu)


def test_enhanced_one_frame_files(exam):
    vol = exam.volume("enhanced-one-frame-files")
    assert vol.multiframe and len(vol.files) == SLICES
    for k, f in enumerate(vol.files):
        ds = pydicom.dcmread(exam.path(f))
        assert ds.SOPClassUID == M.ENHANCED_CT_IMAGE_STORAGE and int(ds.NumberOfFrames) == 1
        assert "RescaleIntercept" not in ds
        content = ds.PerFrameFunctionalGroupsSequence[0].FrameContentSequence[0]
        assert (content.StackID, int(content.InStackPositionNumber)) == ("1", k + 1)


# --------------------------------------------------------------------------- skipped and failed


def _category(exam, name):
    return sorted(p for p, c in exam.skipped.items() if c == name)


def test_skipped_objects_are_what_their_category_says(exam):
    localizers = _category(exam, "localizer")
    assert len(localizers) == 2
    shapes = set()
    for f in localizers:
        ds = pydicom.dcmread(exam.path(f))
        assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "LOCALIZER"] and ds.Modality == "CT"
        shapes.add(ds.pixel_array.shape)
    assert len(shapes) == 2

    shot, = (pydicom.dcmread(exam.path(f)) for f in _category(exam, "secondary capture"))
    assert shot.SOPClassUID == M.SC_IMAGE_STORAGE and shot.PhotometricInterpretation == "RGB"
    assert list(shot.ImageType) == ["DERIVED", "SECONDARY", "SCREEN SAVE"]
    assert shot.Modality in ("CT", "OT") and shot.SeriesDescription == "Exam Summary"
    assert shot.pixel_array.shape == (SIZE, 2 * SIZE, 3) and shot.pixel_array.dtype == np.uint8

    burned, = (pydicom.dcmread(exam.path(f)) for f in _category(exam, "burned-in annotation"))
    assert burned.SOPClassUID == M.SC_IMAGE_STORAGE and burned.BurnedInAnnotation == "YES"
    assert burned.PhotometricInterpretation == "MONOCHROME2"

    cr, = (f for f in _category(exam, "not CT") if f.startswith("13-cr"))
    ds = pydicom.dcmread(exam.path(cr))
    assert (ds.SOPClassUID, ds.Modality, ds.PhotometricInterpretation) == (
        M.CR_IMAGE_STORAGE, "CR", "MONOCHROME1")
    mr = [f for f in _category(exam, "not CT") if f.startswith("13-mr")]
    assert len(mr) == 3
    for f in mr:
        ds = pydicom.dcmread(exam.path(f))
        assert (ds.SOPClassUID, ds.Modality) == (M.MR_IMAGE_STORAGE, "MR")
        assert ds.pixel_array.shape == (SIZE, SIZE)

    sr, = (pydicom.dcmread(exam.path(f)) for f in _category(exam, "not an image"))
    assert sr.SOPClassUID == M.BASIC_TEXT_SR_STORAGE and "PixelData" not in sr
    readme, = _category(exam, "not DICOM")
    with pytest.raises(InvalidDicomError):
        pydicom.dcmread(exam.path(readme))


def test_dicomdir_reads_back_with_fileset(exam):
    dicomdir, = _category(exam, "DICOMDIR")
    assert exam.path(dicomdir).name == "DICOMDIR"
    fs = FileSet(exam.path(dicomdir))
    assert len(fs) == 2
    short = set(_category(exam, "too few slices"))
    found = set()
    for instance in fs:
        ds = instance.load()
        assert ds.Modality == "CT" and ds.SOPClassUID == CT_IMAGE_STORAGE
        assert int(ds.InstanceNumber) in (1, 2)
        found.add(f"{dicomdir.rsplit('/', 1)[0]}/{instance.FileID.replace(chr(92), '/')}")
    assert found == short and len(short) < M.MIN_VOLUME_SLICES
    assert fs.find(PatientID=exam.identity.patient_id)


def test_malformed_values_are_malformed(exam, ignore_invalid_values):
    bad = {c: p for p, c in exam.failed.items()}
    frames = pydicom.dcmread(exam.path(bad["invalid NumberOfFrames"]))
    intercept = pydicom.dcmread(exam.path(bad["invalid RescaleIntercept"]))
    assert frames.NumberOfFrames == "1A" and intercept.RescaleIntercept == "-1O24"
    with pytest.raises(ValueError):
        int(frames.NumberOfFrames)
    with pytest.raises(ValueError):
        float(intercept.RescaleIntercept)
    with pytest.raises(ValueError):
        frames.pixel_array                         # pydicom needs the frame count to decode
    # otherwise sound files of the series of a volume
    vol = exam.volume("malformed-values")
    assert frames.SeriesInstanceUID == intercept.SeriesInstanceUID == vol.series_uid
    assert len(frames.PixelData) == len(intercept.PixelData) == SIZE * SIZE * 2
    assert intercept.pixel_array.shape == (SIZE, SIZE)
    assert all(p.startswith("11-malformed-values/") for p in (bad["invalid NumberOfFrames"],
                                                              bad["invalid RescaleIntercept"]))


def test_truncated_slice_is_cut_inside_its_pixel_data(exam):
    cut, = (p for p, c in exam.failed.items() if c == "truncated")
    vol = exam.volume("truncated-slice")
    header = pydicom.dcmread(exam.path(cut), stop_before_pixels=True)
    assert header.SeriesInstanceUID == vol.series_uid and header.Rows == SIZE
    ds = pydicom.dcmread(exam.path(cut))
    expected = SIZE * SIZE * 2
    assert 0 < len(ds.PixelData) < expected
    with pytest.raises(ValueError):
        ds.pixel_array
    whole = exam.path(vol.files[0]).stat().st_size
    assert exam.path(cut).stat().st_size == whole - expected // 2


# --------------------------------------------------------------------------- PHI, determinism


def test_every_dicom_file_carries_the_made_up_phi(exam):
    ident = exam.identity
    phi = exam.phi_strings()
    assert ident.patient_name in phi and ident.institution in phi
    for rel in [f for v in exam.volumes for f in v.files] + list(exam.failed) + list(exam.skipped):
        data = exam.path(rel).read_bytes()
        if exam.skipped.get(rel) == "not DICOM":
            assert not any(s.encode() in data for s in phi)
            continue
        assert ident.patient_name.encode() in data, rel
        assert ident.patient_id.encode() in data, rel
        if rel.endswith("DICOMDIR"):
            continue
        ds = pydicom.dcmread(exam.path(rel), stop_before_pixels=True)
        assert ds.InstitutionName == ident.institution
        for uid in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID):
            assert uid in phi
    sr = pydicom.dcmread(exam.path(_category(exam, "not an image")[0]))
    assert ident.patient_display_name in sr.ContentSequence[0].TextValue


def test_same_seed_same_bytes_other_seed_other_exam(exam, tmp_path):
    again = M.write_messy_exam(tmp_path / "again", size=SIZE, slices=SLICES, seed=0)
    files = sorted(p.relative_to(exam.root) for p in exam.root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again.root) for p in again.root.rglob("*") if p.is_file())
    for rel in files:
        assert (exam.root / rel).read_bytes() == (again.root / rel).read_bytes(), rel
    assert again.skipped == exam.skipped and again.failed == exam.failed
    for a, b in zip(again.volumes, exam.volumes):
        assert a.files == b.files and np.array_equal(a.hu, b.hu)

    other = M.write_messy_exam(tmp_path / "other", size=SIZE, slices=SLICES, seed=1)
    assert set(other.uids.values()).isdisjoint(exam.uids.values())
    assert not np.array_equal(other.volumes[0].hu, exam.volumes[0].hu)


def test_other_sizes_and_bad_arguments(tmp_path):
    small = M.write_messy_exam(tmp_path / "small", size=32, slices=M.MIN_SLICES, seed=3)
    assert all(v.hu.shape[1:] == (32, 32) for v in small.volumes)
    assert all(len(v.hu) >= M.MIN_VOLUME_SLICES for v in small.volumes)
    with pytest.raises(FileExistsError):
        M.write_messy_exam(tmp_path / "small")
    for bad in ({"slices": M.MIN_SLICES - 1}, {"size": 8}, {"slices": 4.5}):
        with pytest.raises(ValueError):
            M.write_messy_exam(tmp_path / "bad", **bad)

"""The synthetic low-dose chest CT series: read back with pydicom and checked against its ground truth."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut

from ctsvd_testdata import phantom as P

SLICES, SIZE, SIGMA = 64, 256, 25.0


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    return P.write_demo_series(tmp_path_factory.mktemp("demo"), slices=SLICES, size=SIZE,
                               noise_hu=SIGMA, seed=0)


@pytest.fixture(scope="module")
def datasets(series):
    """Every written file read back, in the order of the sorted file names."""
    return [(p, pydicom.dcmread(p)) for p in sorted(series.series_dir.iterdir())]


def _normal_position(ds) -> float:
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])
    return float(np.dot(normal, [float(v) for v in ds.ImagePositionPatient]))


def _read_volume(dsets):
    """HU volume sorted along the slice normal, as an independent reader would build it."""
    dsets = sorted(dsets, key=_normal_position)
    vol = np.stack([(ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope)
                     + float(ds.RescaleIntercept)).astype(np.float32) for ds in dsets])
    return vol, dsets


def _roi(vol, k, r, c, half, depth=0):
    return vol[max(k - depth, 0):k + depth + 1, r - half:r + half + 1, c - half:c + half + 1]


def test_files_are_one_ct_series_in_part10_format(series, datasets):
    assert len(series.files) == SLICES and len(datasets) == SLICES
    assert series.series_dir.name == "CT-chest-lowdose"
    assert {p.name for p, _ in datasets} == {f"IM-0001-{n:04d}.dcm" for n in range(1, SLICES + 1)}
    assert set(series.files) == {p for p, _ in datasets}
    for path, ds in datasets:
        head = path.read_bytes()[:132]
        assert head[:128] == b"\0" * 128 and head[128:] == b"DICM"
        meta = ds.file_meta
        assert meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert meta.MediaStorageSOPClassUID == P.CT_IMAGE_STORAGE == ds.SOPClassUID
        assert meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert meta.SourceApplicationEntityTitle == "SEGH_CT01"
        assert (ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (SIZE, SIZE, 16, 16, 15)
        assert (ds.PixelRepresentation, ds.SamplesPerPixel, ds.PhotometricInterpretation) == (1, 1, "MONOCHROME2")
        assert ds.pixel_array.dtype == np.int16
    assert len({ds.SeriesInstanceUID for _, ds in datasets}) == 1
    assert len({ds.SOPInstanceUID for _, ds in datasets}) == SLICES


def test_rescale_gives_exactly_hu_along_the_normal(series, datasets):
    vol, dsets = _read_volume([ds for _, ds in datasets])
    assert vol.dtype == np.float32 and vol.shape == series.hu.shape
    assert np.array_equal(vol, series.hu)                      # to the last bit
    assert np.array_equal(np.stack([apply_modality_lut(ds.pixel_array, ds) for ds in dsets])
                          .astype(np.float32), series.hu)
    assert [ds.SOPInstanceUID for ds in dsets] == series.uids["sop_instances"]
    assert [ds.filename for ds in dsets] == [str(p) for p in series.files]
    z = np.array([_normal_position(ds) for ds in dsets])
    assert np.array_equal(z, series.z_mm)
    assert np.allclose(np.diff(z), 2.5)


def test_neither_file_names_nor_instance_numbers_give_the_normal_order(series, datasets):
    by_name = [_normal_position(ds) for _, ds in datasets]
    assert by_name != sorted(by_name)
    by_instance = [_normal_position(ds) for ds in sorted((d for _, d in datasets),
                                                         key=lambda d: int(d.InstanceNumber))]
    assert by_instance == sorted(by_instance, reverse=True)     # head first: z falls


def test_geometry_headers(series, datasets):
    ps = 350.0 / SIZE
    for _, ds in datasets:
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert [float(v) for v in ds.PixelSpacing] == [ps, ps]
        assert float(ds.SliceThickness) == float(ds.SpacingBetweenSlices) == 2.5
        assert float(ds.SliceLocation) == float(ds.ImagePositionPatient[2])
        assert float(ds.ImagePositionPatient[0]) == pytest.approx(-(SIZE - 1) / 2 * ps)
    assert series.spacing_mm == (2.5, ps, ps)


def test_headers_are_realistic_and_carry_the_identity(series, datasets):
    ident = series.identity
    sops = set(series.uids["sop_instances"])
    for _, ds in datasets:
        assert ds.Modality == "CT" and list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]
        assert (float(ds.KVP), int(ds.XRayTubeCurrent), ds.PatientPosition) == (100, 30, "HFS")
        assert ds.BodyPartExamined == "CHEST" and ds.StudyDescription == "CT CHEST LOW DOSE"
        assert (float(ds.WindowCenter), float(ds.WindowWidth)) == (-600, 1500)
        assert ds.RescaleType == "HU" and ds.SpecificCharacterSet == "ISO_IR 100"
        assert ds.SeriesNumber == 2 and ds.StudyDate == "20240917"
        assert ds.StudyInstanceUID == series.uids["study"]
        assert ds.FrameOfReferenceUID == series.uids["frame_of_reference"]
        assert str(ds.PatientName) == ident.patient_name and ds.PatientID == ident.patient_id
        assert ds.PatientSex == "F" and ds.PatientAge == "063Y"
        assert ident.patient_display_name in ds.ImageComments
        ref = ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID
        assert ref in sops and ref != ds.SOPInstanceUID
        block = ds.private_block(0x0029, "ACME_PRIVATE 1.0")
        assert block[0x10].value == ident.patient_name and block[0x11].value == ident.patient_id
    assert all(uid.startswith("1.3.6.1.4.1.99999.58310.") and len(uid) <= 64
               for uid in [series.uids["study"], series.uids["series"], *sops])


def test_every_phi_string_is_in_the_written_bytes(series, datasets):
    phi = series.phi_strings()
    blobs = [p.read_bytes() for p, _ in datasets]
    assert len(phi) == len(set(phi)) and all(len(s) >= 6 for s in phi)
    for s in phi:
        assert any(s.encode("latin-1") in b for b in blobs), s
    ident = series.identity
    for must in (ident.patient_name, "QUINCY", ident.patient_id, ident.birth_date, ident.institution,
                 ident.accession_number, ident.station_name, ident.device_serial_number,
                 ident.patient_address, ident.institution_address, ident.patient_telephone,
                 "GREGORY", series.uids["study"], series.uids["frame_of_reference"],
                 *series.uids["sop_instances"]):
        assert must in phi
    assert not any(short in phi for short in ("DOE", "JANE", "F", "063Y", "CHEST"))
    # no PHI in the paths
    for p, _ in datasets:
        rel = str(p.relative_to(series.series_dir.parent))
        assert not any(s in rel for s in phi)


def test_anatomy_in_known_regions(series):
    clean, hu = series.clean_hu, series.hu
    assert clean.dtype == np.float32 and np.array_equal(clean, np.rint(clean))
    assert clean.min() >= -1024 and clean.max() <= 3071 and hu.min() >= -1024 and hu.max() <= 3071
    marks = P.landmarks(SLICES, SIZE, spacing_mm=series.spacing_mm)
    for side in ("right_lung", "left_lung"):
        assert abs(np.median(_roi(clean, *marks[side], 3)) + 850) <= 5
        assert abs(np.median(_roi(hu, *marks[side], 3)) + 850) <= 15    # median of noisy lung
    assert np.median(_roi(hu, *marks["vertebral_body"], 2)) > 200
    assert _roi(clean, *marks["vertebral_body"], 2).min() > 200
    assert abs(np.mean(_roi(hu, *marks["air"], 5)) + 1000) <= 5
    assert abs(np.mean(_roi(hu, *marks["heart"], 8, depth=2)) - 40) <= 15   # soft tissue
    assert abs(np.mean(_roi(hu, *marks["liver"], 5)) - 50) <= 15
    # lungs taper: far smaller near the apex than at their widest, none at the very bottom
    lung_area = ((clean > -950) & (clean < -700)).sum(axis=(1, 2))
    widest = marks["right_lung"][0]
    assert lung_area[-2] < 0.25 * lung_area[widest] and lung_area[0] < 0.25 * lung_area[widest]
    # something dense (bone) in every slice; air outside
    assert (clean.max(axis=(1, 2)) > 400).all()
    assert (clean[:, :3, :] == -1000).all()


def test_noise_level_and_texture(series):
    noise = (series.hu - series.clean_hu).astype(np.float64)
    k, r, c = P.landmarks(SLICES, SIZE, spacing_mm=series.spacing_mm)["heart"]
    roi = noise[k - 4:k + 5, r - 11:r + 11, c - 11:c + 11]      # uniform 45 HU, 30 mm square
    assert np.unique(series.clean_hu[k - 4:k + 5, r - 11:r + 11, c - 11:c + 11]).size == 1
    assert abs(roi.std() / SIGMA - 1) < 0.3

    def corr(lag, axis):
        a = np.moveaxis(roi, axis, -1)
        return np.corrcoef(a[..., :-lag].ravel(), a[..., lag:].ravel())[0, 1]

    # FBP NPS: low-pass ramp peaking near 0.12 cycles/pixel -> strong positive neighbour
    # correlation; no power at DC -> the correlation must turn negative a few pixels out
    for axis in (1, 2):
        assert corr(1, axis) > 0.4
        assert min(corr(lag, axis) for lag in range(2, 7)) < -0.03
    # slices are independent
    assert abs(corr(1, 0)) < 0.1
    # air outside the body is only weakly noisy
    assert noise[:, :10, :].std() < 0.35 * SIGMA


def test_low_dose_noise_alone():
    n = P.low_dose_noise((6, 128, 96), sigma_hu=10.0, body_mask=None, seed=3)
    assert n.shape == (6, 128, 96) and n.dtype == np.float32
    assert abs(n.std() / 10.0 - 1) < 0.1 and abs(n.mean()) < 0.5
    assert np.array_equal(n, P.low_dose_noise((6, 128, 96), sigma_hu=10.0, body_mask=None, seed=3))
    assert P.low_dose_noise((64, 64), sigma_hu=1.0, body_mask=None, seed=0).shape == (64, 64)
    # the path-length weight: the centre of a big body is noisier than its edge, air quieter
    mask = np.zeros((8, 128, 128), bool)
    mask[:, 16:112, 8:120] = True
    m = P.low_dose_noise(mask.shape, sigma_hu=10.0, body_mask=mask, seed=0)
    centre, edge, air = m[:, 56:72, 56:72].std(), m[:, 16:24, 8:16].std(), m[:, :8, :].std()
    assert centre > edge > air


def test_same_seed_same_bytes_other_seed_differs(series, tmp_path):
    again = P.write_demo_series(tmp_path / "a", slices=SLICES, size=SIZE, noise_hu=SIGMA, seed=0)
    assert [p.name for p in again.files] == [p.name for p in series.files]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(again.files, series.files))
    assert np.array_equal(again.hu, series.hu) and again.uids == series.uids

    small = dict(slices=8, size=64)
    s0 = P.write_demo_series(tmp_path / "b", seed=0, **small)
    s1 = P.write_demo_series(tmp_path / "c", seed=1, **small)
    assert not np.array_equal(s0.hu, s1.hu)
    assert not set(s0.phi_strings()) >= set(s1.phi_strings())       # new UIDs
    assert s0.uids["study"] != s1.uids["study"]
    assert [p.name for p in s0.files] != [p.name for p in s1.files]
    ph = P.chest_phantom(8, 64, spacing_mm=(2.5, 350 / 64, 350 / 64), seed=0)
    assert np.array_equal(ph, s0.clean_hu)


@pytest.mark.parametrize("slope, intercept", [(0.5, -1024.0), (0.5, -2048.0), (2.0, -1000.0)])
def test_other_rescale_round_trips_exactly(tmp_path, slope, intercept):
    s = P.write_demo_series(tmp_path, slices=8, size=128, seed=2, rescale_slope=slope,
                            rescale_intercept=intercept, reverse_z=False)
    vol, dsets = _read_volume([pydicom.dcmread(p) for p in s.files])
    assert np.array_equal(vol, s.hu)
    assert (float(dsets[0].RescaleSlope), float(dsets[0].RescaleIntercept)) == (slope, intercept)
    stored = np.stack([ds.pixel_array for ds in dsets]).astype(np.float64)
    assert np.array_equal(stored * slope + intercept, s.hu.astype(np.float64))
    assert s.hu.min() >= -1024 and s.hu.max() <= 3071
    if slope == 0.5:
        assert (s.hu != np.rint(s.hu)).any()          # the finer grid is really used
    # reverse_z=False: instance numbers follow the normal
    assert [int(ds.InstanceNumber) for ds in dsets] == list(range(1, 9))


def test_values_that_do_not_fit_int16_are_refused(tmp_path):
    # 3071 HU at slope 0.1 needs 40950; -1024 HU with intercept +40000 needs -41024
    with pytest.raises(ValueError, match="int16"):
        P.write_demo_series(tmp_path, slices=4, size=64, rescale_slope=0.1)
    with pytest.raises(ValueError, match="int16"):
        P.write_demo_series(tmp_path, slices=4, size=64, rescale_intercept=40000.0)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError):
            P.write_demo_series(tmp_path, slices=4, size=64, rescale_slope=bad)
    assert not (tmp_path / P.SERIES_FOLDER).exists() or not any((tmp_path / P.SERIES_FOLDER).iterdir())


def test_a_folder_with_files_is_not_overwritten(tmp_path):
    P.write_demo_series(tmp_path, slices=2, size=32)
    with pytest.raises(FileExistsError):
        P.write_demo_series(tmp_path, slices=2, size=32)


def test_clean_volume_is_low_rank_along_z(series):
    s = np.linalg.svd(series.clean_hu.reshape(SLICES, -1).astype(np.float64), compute_uv=False)
    assert s[10] / s[0] < 0.05
    assert np.all(np.diff(s) <= 1e-6 * s[0])
    # but not trivially so: the anatomy does change along z
    assert s[1] / s[0] > 0.05


def test_shapes_scale_with_matrix_size():
    for size in (64, 512):
        ps = 350.0 / size
        vol = P.chest_phantom(4, size, spacing_mm=(2.5, ps, ps), seed=0)
        marks = P.landmarks(4, size, spacing_mm=(2.5, ps, ps))
        assert vol.shape == (4, size, size)
        k, r, c = marks["right_lung"]
        assert vol[k, r, c] < -600 or np.median(_roi(vol, k, r, c, max(1, size // 64))) < -600
        k, r, c = marks["vertebral_body"]
        assert vol[k, r, c] > 200
        # body fills about the same fraction of the field of view at every size
        body = (vol[1] > -900).mean()
        assert 0.45 < body < 0.7, body

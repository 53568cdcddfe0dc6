"""The element walk (ctsvd_common.dicom.elements) held to pydicom: the same elements where pydicom reads a
file whole, and a cut that pydicom reads without a word where a sequence is cut short."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import data_element_generator
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from ctsvd_common.dicom import BadDicom, NotDicom, input_files, quiet_pydicom, read
from ctsvd_common.dicom.elements import PIXEL_DATA, ElementWalk, check_complete, mapped
from ctsvd_common.dicom.inputs import PREAMBLE

TEST_FILES = Path(get_testdata_file("CT_small.dcm")).parent


@pytest.fixture(autouse=True)
def _quiet():
    quiet_pydicom()


class _Every:
    """``wanted`` for a walk that keeps every element."""

    def __contains__(self, tag: int) -> bool:
        return True


def walked(path: Path, implicit: bool) -> dict[int, RawDataElement]:
    """The top-level elements before the pixel data, as the walk finds them."""
    with mapped(path) as buf:
        walk = ElementWalk(buf, little=True)
        start = walk.file_meta(PREAMBLE + 4)
        found, _ = walk.collect(start, _Every(), implicit)
    return found


def pydicoms(path: Path, implicit: bool) -> list:
    """The top-level elements before the pixel data, as pydicom's own generator reads them."""
    with open(path, "rb") as f:
        pydicom.filereader.read_preamble(f, False)
        pydicom.filereader._read_file_meta_info(f)
        return list(data_element_generator(f, implicit, True, stop_when=lambda tag, vr, length: tag == PIXEL_DATA))


def _plain_little_endian_part10() -> list[Path]:
    """Bundled files pydicom reads whole, in the encodings the walk reads elements of (Part 10, little endian,
    not deflated)."""
    files = []
    for path in input_files(TEST_FILES):
        try:
            ds = read(path, pixels=False)
        except (NotDicom, BadDicom):
            continue
        syntax = ds.file_meta.TransferSyntaxUID
        if ds.preamble is not None and syntax.is_transfer_syntax and syntax.is_little_endian \
                and not syntax.is_deflated:
            files.append(path)
    return files


def test_where_pydicom_reads_a_file_whole_the_walk_finds_the_same_elements():
    files = _plain_little_endian_part10()
    assert len(files) > 80
    for path in files:
        implicit = pydicom.dcmread(path, stop_before_pixels=True).original_encoding[0]
        ours = walked(path, implicit)
        theirs = pydicoms(path, implicit)
        assert list(ours) == [e.tag for e in theirs], path.name
        for elem in theirs:
            if isinstance(elem, RawDataElement):   # pydicom parses undefined-length sequences as it reads them
                mine = ours[elem.tag]
                theirs_value = elem.value or b""   # pydicom holds an empty value as None
                assert (mine.value_tell, mine.length, mine.value) == (elem.value_tell, elem.length, theirs_value), \
                    (path.name, elem.tag)


def _with_a_sequence(syntax) -> bytes:
    """A small CT header whose ReferencedImageSequence of three items comes before PatientName."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    items = []
    for _ in range(3):
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = CTImageStorage, generate_uid()
        items.append(item)
    ds.ReferencedImageSequence = Sequence(items)
    ds.PatientName = "DOE^JANE"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True, implicit_vr=syntax == ImplicitVRLittleEndian)
    return buffer.getvalue()


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_pydicom_reads_a_file_cut_inside_a_sequence_as_a_shorter_one_and_the_walk_does_not(tmp_path, syntax):
    data = _with_a_sequence(syntax)
    cut = tmp_path / "cut.dcm"
    # Cut right after the second item: pydicom reads two items and no PatientName, without a word.
    second_item_end = data.index(b"\xfe\xff\x00\xe0", data.index(b"\xfe\xff\x00\xe0") + 8)
    second_item_end = data.index(b"\xfe\xff\x00\xe0", second_item_end + 8)
    cut.write_bytes(data[:second_item_end])
    ds = pydicom.dcmread(cut)
    assert len(ds.ReferencedImageSequence) == 2 and "PatientName" not in ds
    with pytest.raises(BadDicom, match=r"^truncated: the file ends inside ReferencedImageSequence$"):
        check_complete(cut, ds)
    # And at every byte inside the sequence: the walk always tells; pydicom mostly does not.
    start, end = data.index(b"\x08\x00\x40\x11"), data.index(b"\x10\x00\x10\x00")
    quiet = 0
    for n in range(start + 12, end):
        cut.write_bytes(data[:n])
        with pytest.raises(BadDicom, match=r"^truncated: the file ends inside ReferencedImageSequence$"):
            read(cut)
        try:
            pydicom.dcmread(cut)
            quiet += 1
        except Exception:
            pass
    assert quiet > (end - start) * 0.8

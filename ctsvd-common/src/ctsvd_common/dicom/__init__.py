"""Reading the DICOM files of an input tree, with a one-line reason for every failure.

Two kinds of failure are told apart, because users treat them differently:

* :class:`NotDicom`: the file is something else (a README, a PNG, a JSON
  sidecar, a DICOMDIR). It is passed over and noted; it is not an error.
* :class:`BadDicom`: the file is DICOM but cannot be used (truncated,
  corrupt, nonsense image attributes, pixel data shorter than the image).
  That is an error.

Reasons are composed here from facts we checked, never copied from a
library's exception text, which may quote header values, and so PHI. They
name attributes by keyword or tag, never by value.

One module per concern (the arrows run down the list, never up):

* :mod:`.inputs`: the two verdicts, quieting pydicom, listing input files;
* :mod:`.values`: numbers and codes read from attributes (:class:`BadValue`);
* :mod:`.image`: the Image Pixel attributes, and the one check that native
  pixel data is as long as they say;
* :mod:`.elements`: the walk over the raw element stream that finds files
  cut inside a sequence, which pydicom reads without a word;
* :mod:`.reader`: reading a whole file (:func:`read`);
* :mod:`.header`: reading only a file's header, fast, for a converter that
  reads thousands of them.
"""

from ctsvd_common.dicom.inputs import BadDicom, NotDicom, input_files, quiet_pydicom
from ctsvd_common.dicom.reader import read

__all__ = ["BadDicom", "NotDicom", "input_files", "quiet_pydicom", "read"]

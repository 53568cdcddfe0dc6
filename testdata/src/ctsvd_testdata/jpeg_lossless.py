"""A JPEG Lossless encoder (Process 14, Selection Value 1), for the exams that carry that syntax.

No pydicom backend encodes transfer syntax 1.2.840.10008.1.2.4.70 (decoders
read it), so the exams that hold it encode their frames here.
"""

from __future__ import annotations

import heapq
import struct

import numpy as np

__all__ = ["encode_jpeg_lossless_sv1"]


def _huffman_table(counts: np.ndarray) -> tuple[list[int], list[int]]:
    """BITS (counts of codes of length 1..16) and HUFFVAL for symbol counts (T.81 Annex K.2).

    Huffman code lengths with one reserved symbol, so that no code is all
    ones; lengths over 16 are folded back as in Figure K.3.
    """
    symbols = [s for s in range(len(counts)) if counts[s]]
    reserved = len(counts)
    heap = [(int(counts[s]), s, [s]) for s in symbols] + [(0, reserved, [reserved])]
    heapq.heapify(heap)
    length = dict.fromkeys([*symbols, reserved], 0)
    while len(heap) > 1:
        w1, t1, g1 = heapq.heappop(heap)
        w2, t2, g2 = heapq.heappop(heap)
        for s in g1 + g2:
            length[s] += 1
        heapq.heappush(heap, (w1 + w2, min(t1, t2), g1 + g2))
    bits = [0] * 33
    for n in length.values():
        bits[n] += 1
    i = 32
    while i > 16:                            # Figure K.3: no code longer than 16 bits
        while bits[i] > 0:
            j = i - 2
            while bits[j] == 0:
                j -= 1
            bits[i] -= 2
            bits[i - 1] += 1
            bits[j + 1] += 2
            bits[j] -= 1
        i -= 1
    while bits[i] == 0:
        i -= 1
    bits[i] -= 1                             # the reserved (all ones) code goes
    huffval = sorted(symbols, key=lambda s: (length[s], s))
    return bits[1:17], huffval


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">HH", marker, len(payload) + 2) + payload


def encode_jpeg_lossless_sv1(frame: np.ndarray) -> bytes:
    """One 16-bit frame as JPEG Lossless, Process 14, Selection Value 1 (ITU T.81 Annex H).

    The codestream of transfer syntax 1.2.840.10008.1.2.4.70: predictor
    Ra (the sample to the left; above for the first column; 2^15 for the
    first sample), precision 16, no point transform, one optimal Huffman
    table, no restart intervals. Signed values are coded as their 16-bit
    two's complement pattern, as DICOM stores them.

    Parameters
    ----------
    frame : ndarray, int16 or uint16, (rows, cols)

    Returns
    -------
    bytes
        SOI ... EOI.
    """
    if frame.ndim != 2 or frame.dtype.itemsize != 2 or frame.dtype.kind not in "iu":
        raise ValueError("a 2-D int16 or uint16 frame is needed")
    x = np.ascontiguousarray(frame).view(np.uint16).astype(np.int64)
    rows, cols = x.shape
    pred = np.empty_like(x)
    pred[0, 0] = 1 << 15
    pred[0, 1:] = x[0, :-1]
    pred[1:, 0] = x[:-1, 0]
    pred[1:, 1:] = x[1:, :-1]
    diff = (x - pred) & 0xFFFF                        # modulo 2^16 (H.1.2.1) ...
    diff = np.where(diff >= 0x8000, diff - 0x10000, diff).ravel()   # ... as -32768..32767
    ssss = np.frexp(np.abs(diff).astype(np.float64))[1].astype(np.int64)   # bit length, 0 for 0
    extra_len = np.where(ssss == 16, 0, ssss)         # difference 32768: category 16, no bits
    extra = np.where(diff < 0, diff - 1, diff) & ((1 << extra_len) - 1)

    bits, huffval = _huffman_table(np.bincount(ssss, minlength=17))
    code_of, size_of = np.zeros(17, np.int64), np.zeros(17, np.int64)
    code, k = 0, 0
    for n in range(1, 17):                            # canonical codes (Annex C)
        for _ in range(bits[n - 1]):
            code_of[huffval[k]], size_of[huffval[k]] = code, n
            code, k = code + 1, k + 1
        code <<= 1

    nbits = size_of[ssss] + extra_len                 # at most 16 + 15 bits per sample
    word = ((code_of[ssss] << extra_len) | extra) << (32 - nbits)
    stream = ((word[:, None] >> np.arange(31, -1, -1)) & 1)[np.arange(32) < nbits[:, None]]
    stream = np.concatenate([stream, np.ones(-stream.size % 8, np.int64)])   # pad with 1-bits
    entropy = np.packbits(stream.astype(np.uint8)).tobytes().replace(b"\xff", b"\xff\x00")

    return b"".join([
        b"\xff\xd8",                                                          # SOI
        _segment(0xFFC3, struct.pack(">BHHB", 16, rows, cols, 1) + bytes([1, 0x11, 0])),
        _segment(0xFFC4, bytes([0x00, *bits, *huffval])),                     # DHT, DC table 0
        _segment(0xFFDA, bytes([1, 1, 0x00, 1, 0, 0])),                       # SOS: Ss = SV 1
        entropy,
        b"\xff\xd9",                                                          # EOI
    ])

"""What one task computes on its block of pixels.

A block is ``A[:, c0:c1]``: every slice, a contiguous run of pixel columns,
float32 as stored. Each kernel walks its block in column chunks of about
16 MiB, upcasts a chunk to float64 and multiplies. The float32 input is exact
in float64, and float64 products keep the small singular values that float32
power iterations drown in rounding (see ``halko``). Results are small: the
driver only ever receives m × ℓ and ℓ × ℓ matrices and a few scalars.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

CHUNK_BYTES = 16 << 20


def column_chunks(block: np.ndarray) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield ``(columns, chunk)`` pairs: float64 copies of consecutive column runs."""
    m, n = block.shape
    width = max(256, CHUNK_BYTES // (8 * max(m, 1)))
    for c in range(0, n, width):
        cols = slice(c, min(c + width, n))
        yield cols, block[:, cols].astype(np.float64)


def sample_range(block: np.ndarray, X: np.ndarray, with_gram: bool) -> tuple[np.ndarray, np.ndarray]:
    """One application of A·Aᵀ to X, restricted to this block.

    Returns ``(Z_j, C_j)`` with ``Z_j = A_j (A_jᵀ X)`` (m × ℓ) and, when
    ``with_gram``, ``C_j = (A_jᵀ X)ᵀ (A_jᵀ X)`` (ℓ × ℓ), else zeros. Summed over
    blocks they give ``A Aᵀ X`` and ``Xᵀ A Aᵀ X``.
    """
    m, ell = X.shape
    Z = np.zeros((m, ell))
    C = np.zeros((ell, ell))
    for _, a in column_chunks(block):
        y = a.T @ X
        Z += a @ y
        if with_gram:
            C += y.T @ y
    return Z, C


def eigenimages(block: np.ndarray, M: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """This block's columns of ``Vt = M A`` (float32), and its share of the error.

    Returns ``(Vt_j, stats)`` with ``stats = [‖A_j‖², ‖diag(s)·Vt_j‖², ‖diag(s)·(Vt_j − Ṽt_j)‖²]``,
    where ``Vt_j`` is float64 and ``Ṽt_j`` the float32 that is stored. Both
    methods give U·diag(s)·Vt = A·P with P an orthogonal projector (Gram:
    P = V·Vᵀ; randomized: P = Q·Ûₖ·Ûₖᵀ·Qᵀ), so with U orthonormal
    ‖A − U·diag(s)·Vt‖² = ‖A‖² − ‖diag(s)·Vt‖², and storing Vt in float32
    adds ‖diag(s)·(Vt − Ṽt)‖² (its cross term with A·(I − P) is zero for the
    Gram route and at the 1e-7 level of ‖A‖ for the randomized one). That
    costs one k × m product per pixel, where forming the residual
    A − U·diag(s)·Ṽt would cost two and an m × n subtraction.
    """
    k = M.shape[0]
    s2 = np.square(s)
    vt = np.empty((k, block.shape[1]), dtype=np.float32)
    norm2 = kept2 = rounding2 = 0.0
    for cols, a in column_chunks(block):
        v = M @ a
        vt[:, cols] = v
        rounded = vt[:, cols] - v
        norm2 += float(np.vdot(a, a))
        kept2 += float(s2 @ np.einsum("ij,ij->i", v, v))
        rounding2 += float(s2 @ np.einsum("ij,ij->i", rounded, rounded))
    return vt, np.array([norm2, kept2, rounding2])


def gram(block: np.ndarray) -> tuple[np.ndarray]:
    """This block's share ``A_j A_jᵀ`` (m × m, float64) of the Gram matrix ``A Aᵀ``."""
    m = block.shape[0]
    G = np.zeros((m, m))
    for _, a in column_chunks(block):
        G += np.dot(a, a.T)  # NumPy sees the transpose of one buffer and calls BLAS syrk
    return (G,)

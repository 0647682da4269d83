"""The factorisations behind `build_model`: a randomized truncated SVD and ALS.

`encode_ids` and `rating_matrix` turn rating columns into the sparse users x
movies matrix; `truncated_svd` factors it without ever densifying it (a dense
SVD only for matrices with a short side); `shrink` is the singular-value
weighting of the `"scaled"` method; `rating_factors` turns the bias
residuals into the factors behind `predict`. Every function is
deterministic for a given `seed`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

__all__ = [
    "encode_ids",
    "rating_factors",
    "rating_matrix",
    "same_pattern",
    "shrink",
    "truncated_svd",
]

_RATING_RANK = 10  # rank of the residual factors behind predict().
_RIDGE = 10.0  # ridge penalty of the ALS round that refines them.
_OVERSAMPLING = 10  # randomized SVD: extra random vectors beyond the rank ...
_POWER_ITERATIONS = 4  # ... and passes over the data that sharpen them.


def encode_ids(ids: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.intp]]:
    """Return the sorted unique ids and each id's position among them."""
    if len(ids) and int(ids.max()) - int(ids.min()) < 4 * len(ids) + 1024:
        low = int(ids.min())  # dense ids: a lookup table beats sorting
        present = np.zeros(int(ids.max()) - low + 1, dtype=bool)
        present[ids - low] = True
        positions = np.cumsum(present) - 1
        return np.flatnonzero(present).astype(np.int64) + low, positions[ids - low]
    unique, positions = np.unique(ids, return_inverse=True)
    return unique.astype(np.int64), positions


def rating_matrix(
    rows: npt.NDArray[np.intp],
    cols: npt.NDArray[np.intp],
    scores: npt.NDArray[np.float32],
    shape: tuple[int, int],
) -> sp.csr_matrix:
    """Build the CSR ratings matrix; for a repeated (user, movie) keep the last."""
    matrix = sp.csr_matrix((scores, (rows, cols)), shape=shape, dtype=np.float32)
    if matrix.nnz < len(scores):  # duplicates were summed: rebuild from the last ones
        keys = rows.astype(np.int64) * shape[1] + cols
        _, first_from_end = np.unique(keys[::-1], return_index=True)
        last = len(keys) - 1 - first_from_end
        matrix = sp.csr_matrix((scores[last], (rows[last], cols[last])), shape=shape)
    matrix.sort_indices()
    return matrix


def same_pattern(matrix: sp.csr_matrix, values: npt.NDArray[Any]) -> sp.csr_matrix:
    """Return a CSR matrix with *matrix*'s nonzero pattern holding *values*."""
    return sp.csr_matrix(
        (values.astype(np.float64), matrix.indices, matrix.indptr), shape=matrix.shape
    )


def truncated_svd(
    matrix: sp.csr_matrix, rank: int, seed: int
) -> tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any]]:
    """Return the top-*rank* singular triplets of *matrix*, largest first.

    A randomized SVD (Halko, Martinsson and Tropp, 2011): multiply the matrix
    by a random block of `rank + 10` vectors, sharpen that block with a few
    power iterations (re-orthonormalised by QR), then take the exact SVD of
    the matrix projected onto it.  Every step is a sparse x dense product or
    a small dense factorisation, and *seed* makes it repeatable.  Small (and
    all-zero) matrices take a dense SVD, which is cheap when one side is short.
    """
    rank = min(rank, *matrix.shape)
    if not np.any(matrix.data):  # nothing to factor (no ratings, or all residuals 0)
        return np.zeros((matrix.shape[0], rank)), np.zeros(rank), np.zeros((rank, matrix.shape[1]))
    if min(matrix.shape) <= rank + _OVERSAMPLING:
        u, s, vt = np.linalg.svd(matrix.toarray(), full_matrices=False)
        return u[:, :rank], s[:rank], vt[:rank]
    start = np.random.default_rng(seed).standard_normal((matrix.shape[1], rank + _OVERSAMPLING))
    basis, _ = np.linalg.qr(matrix @ start)
    for _ in range(_POWER_ITERATIONS):
        basis, _ = np.linalg.qr(matrix.T @ basis)
        basis, _ = np.linalg.qr(matrix @ basis)
    u, s, vt = np.linalg.svd((matrix.T @ basis).T, full_matrices=False)
    return (basis @ u)[:, :rank], s[:rank], vt[:rank]


def shrink(s: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Weight singular values by `s**2 / (s**2 + s_k**2)`: the last counts half."""
    if len(s) == 0:
        return s
    power = s.astype(np.float64) ** 2
    weight = np.divide(power, power + power[-1], out=np.zeros_like(power), where=power > 0)
    return np.asarray(s * weight)


def rating_factors(
    residuals: sp.csr_matrix, seed: int
) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """Factor the bias residuals: a rank-10 SVD, then one ALS round."""
    u, s, _ = truncated_svd(residuals, _RATING_RANK, seed)
    mask = same_pattern(residuals, np.ones(residuals.nnz))
    items = _ridge(mask.T, residuals.T, u * np.sqrt(s))
    return _ridge(mask, residuals, items), items


def _ridge(mask: sp.spmatrix, target: sp.spmatrix, other: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Solve every row's ridge regression of its ratings on *other*'s factors.

    Row `a` gets `(sum_b f_b f_b^T + ridge I)^-1 sum_b z_ab f_b` over the
    entries `b` it has.  The per-row Gram matrices come from one sparse
    product with the flattened outer products `f_b f_b^T`, so there is no
    Python loop over rows.
    """
    rank = other.shape[1]
    outer = (other[:, :, None] * other[:, None, :]).reshape(len(other), rank * rank)
    gram = (mask @ outer).reshape(mask.shape[0], rank, rank) + _RIDGE * np.eye(rank)
    return np.linalg.solve(gram, (target @ other)[:, :, None])[:, :, 0]

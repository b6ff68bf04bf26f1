"""True single-precision LAPACK (sgesdd, sgesv, ssyevd) through ctypes + LAPACKE.

numpy.linalg always computes in float64, even for float32 arrays (it only casts
the result back), so it cannot say what a float32 implementation reaches.  The
golden test uses this module, when the system's liblapacke can be loaded, only
for diagnostics ("what does plain f32 LAPACK get on this input?").  The
oracle itself never depends on it.

AVAILABLE is False when no liblapacke is found; callers fall back to numpy.
"""

import ctypes
import ctypes.util

import numpy as np

ROW_MAJOR = 101
_lib = None
for _name in ("liblapacke.so.3", "liblapacke.so", ctypes.util.find_library("lapacke")):
    if not _name:
        continue
    try:
        _lib = ctypes.CDLL(_name)
        break
    except OSError:
        continue
AVAILABLE = _lib is not None
_P = ctypes.c_void_p
_I = ctypes.c_int


def _ptr(a):
    return a.ctypes.data_as(_P)


def svd(a):
    """Thin SVD in float32: (U m x r, s r, Vt r x n), like np.linalg.svd(full_matrices=False)."""
    a = np.array(a, dtype=np.float32, order="C", copy=True)
    m, n = a.shape
    r = min(m, n)
    u = np.zeros((m, r), np.float32)
    s = np.zeros(r, np.float32)
    vt = np.zeros((r, n), np.float32)
    if r == 0:
        return u, s, vt
    f = _lib.LAPACKE_sgesdd
    f.restype = _I
    info = f(_I(ROW_MAJOR), ctypes.c_char(b"S"), _I(m), _I(n), _ptr(a), _I(n), _ptr(s),
             _ptr(u), _I(r), _ptr(vt), _I(n))
    if info != 0:
        raise np.linalg.LinAlgError("sgesdd info %d" % info)
    return u, s, vt


def solve(a, b):
    """x with a x = b in float32 (a n x n, b n x k)."""
    a = np.array(a, dtype=np.float32, order="C", copy=True)
    b = np.array(b, dtype=np.float32, order="C", copy=True)
    n = a.shape[0]
    k = b.shape[1]
    ipiv = np.zeros(max(n, 1), np.int32)
    f = _lib.LAPACKE_sgesv
    f.restype = _I
    info = f(_I(ROW_MAJOR), _I(n), _I(k), _ptr(a), _I(n), _ptr(ipiv), _ptr(b), _I(k))
    if info != 0:
        raise np.linalg.LinAlgError("sgesv info %d" % info)
    return b


def eigh(a):
    """Symmetric eigendecomposition in float32: (w ascending, V with eigenvectors in columns).

    ssyevd (divide and conquer) with an explicit workspace: LAPACKE's own workspace
    query returns the size as a float, which rounds 1 + 6n + 2n^2 down for large n
    (illegal lwork).  (ssyevr, MRRR, is markedly less accurate in float32: eigenvector
    orthogonality ~2e-3 at n = 3072.)
    """
    a = np.array(a, dtype=np.float32, order="C", copy=True)
    n = a.shape[0]
    w = np.zeros(n, np.float32)
    lwork, liwork = 1 + 6 * n + 2 * n * n, 3 + 5 * n
    work = np.zeros(lwork, np.float32)
    iwork = np.zeros(liwork, np.int32)
    f = _lib.LAPACKE_ssyevd_work
    f.restype = _I
    info = f(_I(ROW_MAJOR), ctypes.c_char(b"V"), ctypes.c_char(b"U"), _I(n), _ptr(a), _I(n),
             _ptr(w), _ptr(work), _I(lwork), _ptr(iwork), _I(liwork))
    if info != 0:
        raise np.linalg.LinAlgError("ssyevd info %d" % info)
    return w, a

"""Encode the ``submission_scores.*_cv_bags`` columns without numpy.

ramp-database stores them as ``zlib.compress(numpy_array.dumps())`` and reads them with
``pickle.loads(zlib.decompress(value))`` under numpy 1.26. Airflow's virtualenv has no
numpy (and numpy 2 pickles name ``numpy._core``, which numpy 1.26 cannot import), so we
write, opcode by opcode, the pickle numpy 1.26's ``ndarray.dumps()`` (protocol 2) gives a
1-D float64 array; tests check it is byte-identical to numpy 1.26's own output.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence


def _binput(index: int) -> bytes:
    return b"q" + bytes([index])


def _int(value: int) -> bytes:
    """The shortest pickle opcode for a non-negative int, as pickle itself chooses it."""
    if value < 0x100:
        return b"K" + bytes([value])
    if value < 0x10000:
        return b"M" + struct.pack("<H", value)
    return b"J" + struct.pack("<i", value)


def _unicode(text: str) -> bytes:
    data = text.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(data)) + data


def numpy_float64_pickle(values: Sequence[float]) -> bytes:
    """
    The bytes of numpy 1.26's ``numpy.array(values, dtype=float64).dumps()``.

    :param values: the array's elements, plain ints or floats (bool is refused).
    """
    floats = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"cv bag values must be numbers, not {type(value).__name__} {value!r}")
        floats.append(float(value))
    raw = struct.pack(f"<{len(floats)}d", *floats).decode("latin-1")
    return b"".join(
        [
            b"\x80\x02",
            b"cnumpy.core.multiarray\n_reconstruct\n",
            _binput(0),
            b"cnumpy\nndarray\n",
            _binput(1),
            _int(0),
            b"\x85",
            _binput(2),
            b"c_codecs\nencode\n",
            _binput(3),
            _unicode("b"),
            _binput(4),
            _unicode("latin1"),
            _binput(5),
            b"\x86",
            _binput(6),
            b"R",
            _binput(7),
            b"\x87",
            _binput(8),
            b"R",
            _binput(9),
            b"(",
            _int(1),
            _int(len(floats)),
            b"\x85",
            _binput(10),
            b"cnumpy\ndtype\n",
            _binput(11),
            _unicode("f8"),
            _binput(12),
            b"\x89\x88\x87",
            _binput(13),
            b"R",
            _binput(14),
            b"(",
            _int(3),
            _unicode("<"),
            _binput(15),
            b"NNN",
            b"J" + struct.pack("<i", -1),
            b"J" + struct.pack("<i", -1),
            _int(0),
            b"t",
            _binput(16),
            b"b",
            b"\x89",
            b"h\x03",
            _unicode(raw),
            _binput(17),
            b"h\x05",
            b"\x86",
            _binput(18),
            b"R",
            _binput(19),
            b"t",
            _binput(20),
            b"b.",
        ]
    )


def encode_cv_bags(values: Sequence[float]) -> bytes:
    """
    A ``*_cv_bags`` column value: the zlib-compressed numpy 1.26 pickle of ``values``.

    :param values: the bagged score after 1, 2, ... N folds (n_bag 0..N-1); never empty.
    """
    if not values:
        raise ValueError("cv bags need at least one value (one per n_bag)")
    return zlib.compress(numpy_float64_pickle(values))

"""envs/fastmath.py: float64 sin, exp and log in place through torch, as numpy computes them
to an ulp, on every layout a kernel hands it."""

from __future__ import annotations

import numpy as np
import pytest

from envs import fastmath

FUNCS = {"sin": (fastmath.sin_, np.sin), "exp": (fastmath.exp_, np.exp), "log": (fastmath.log_, np.log)}


def test_hand_values() -> None:
    x = np.array([0.0, np.pi / 2, -np.pi / 6])
    np.testing.assert_allclose(fastmath.sin_(x), [0.0, 1.0, -0.5], rtol=0, atol=1e-15)
    x = np.array([0.0, 1.0, -745.2, 709.0])
    out = fastmath.exp_(x)
    assert out is x and out[0] == 1.0 and out[2] == 0.0
    np.testing.assert_allclose(out[[1, 3]], [np.e, np.exp(709.0)], rtol=2e-16)
    x = np.array([1.0, np.e, 100.0, 0.0, -1.0, np.nan])
    fastmath.log_(x)
    np.testing.assert_allclose(x[:3], [0.0, 1.0, 2 * np.log(10.0)], rtol=2e-16)
    assert x[3] == -np.inf and np.isnan(x[4]) and np.isnan(x[5])


# contiguous, strided (columns, every other element, a transpose), 0-d, and arrays longer
# than one chunk, contiguous and strided
LAYOUTS = {
    "contiguous": ((1000,), lambda a: a),
    "zero_d": ((), lambda a: a),
    "rows": ((40, 30), lambda a: a[10:30]),
    "columns": ((40, 30), lambda a: a[:, 5:20]),
    "every_other": ((999,), lambda a: a[::2]),
    "transpose": ((30, 40), lambda a: a.T),
    "long": ((3 * fastmath.CHUNK + 17,), lambda a: a),
    "long_strided": ((2 * fastmath.CHUNK + 5, 3), lambda a: a[:, 1]),
    "long_rows": ((3, fastmath.CHUNK + 9), lambda a: a[:, ::2]),
    "many_short_rows": ((2 * fastmath.CHUNK, 4), lambda a: a[:, :3]),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("name", list(FUNCS))
def test_in_place_on_every_layout_within_an_ulp_of_numpy(name: str, layout: str) -> None:
    fast, ref = FUNCS[name]
    shape, view = LAYOUTS[layout]
    rng = np.random.default_rng(0)
    base = rng.uniform(0.01, 5.0, size=shape) if name == "log" else rng.uniform(-20.0, 20.0, size=shape)
    before = base.copy()
    v = view(base)
    expected = ref(np.array(v))
    out = fast(v)
    assert out is v
    np.testing.assert_array_max_ulp(v, expected, maxulp=2)
    outside = np.ones(shape, dtype=bool)
    view(outside)[...] = False  # the elements of the view
    np.testing.assert_array_equal(base[outside], before[outside])  # nothing else written


def test_other_dtypes_and_read_only_arrays_go_to_numpy() -> None:
    x = np.linspace(0.5, 2.0, 7, dtype=np.float32)
    expected = np.log(x)
    assert fastmath.log_(x).dtype == np.float32
    np.testing.assert_array_equal(x, expected)  # numpy's own float32 log
    ro = np.ones(3)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        fastmath.exp_(ro)

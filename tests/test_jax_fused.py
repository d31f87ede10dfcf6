"""The jax backend's fused forward: loss and gradient from one native pass, read by the VJP.

References are exact: the gradient is ``sign(x - y)`` times ``grad_output / count``
rounded once to the dtype, computed here with ``fractions``.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="jax is in the 'frameworks' and 'test' extras")

import jax.numpy as jnp  # noqa: E402

import l1backends as l1  # noqa: E402
from l1backends._backends.jax import _backend as jax_backend  # noqa: E402
from l1backends._backends.jax import _ffi  # noqa: E402
from l1backends.registry import registry  # noqa: E402

NATIVE = registry.implementation("numba-cpu")


class Spy:
    """The NumPy backend the custom call hands its buffers to: it records every call
    (the operation, and the address of the ``out=`` buffer it writes) and runs numba-cpu."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int | None]] = []

    def can_run(self, plan):  # type: ignore[no-untyped-def]
        return None

    def loss(self, plan, input, target, weight, out=None):  # type: ignore[no-untyped-def]
        self.calls.append(("loss", None if out is None else out.ctypes.data))
        return NATIVE.loss(plan, input, target, weight, out=out)

    def grad(self, plan, input, target, weight, grad_output, out=None):  # type: ignore[no-untyped-def]
        self.calls.append(("grad", None if out is None else out.ctypes.data))
        return NATIVE.grad(plan, input, target, weight, grad_output, out=out)

    def loss_and_grad(self, plan, input, target, weight, grad_output, out=None):  # type: ignore[no-untyped-def]
        self.calls.append(("loss_and_grad", None if out is None else out.ctypes.data))
        return NATIVE.loss_and_grad(plan, input, target, weight, grad_output, out=out)


SPY = Spy()


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Every traced reduction through the custom call, whose NumPy calls go to the spy."""
    monkeypatch.setattr(jax_backend, "FFI_MIN", 0)
    monkeypatch.setattr(jax_backend, "FFI_MIN_NARROW", 0)
    spec = l1.BackendSpec(
        name="numpy-spy-fused",
        implementation=f"{__name__}:SPY",
        array_types=("numpy:ndarray",),
        before=("numba-cpu",),
    )
    l1.register_backend(spec)
    SPY.calls.clear()
    try:
        yield SPY
    finally:
        l1.unregister_backend("numpy-spy-fused")


def _rounded(value: Fraction, dtype: str) -> np.generic:
    """``value`` (finite) rounded to nearest, ties to even, in ``dtype``: exactly."""
    guess = np.asarray(float(value), dtype=dtype)
    candidates = [
        np.nextafter(guess, np.asarray(-np.inf, dtype)),
        guess,
        np.nextafter(guess, np.asarray(np.inf, dtype)),
    ]
    uint = {2: np.uint16, 4: np.uint32, 8: np.uint64}[guess.itemsize]

    def key(candidate: np.ndarray) -> tuple[Fraction, int]:
        return abs(Fraction(float(candidate)) - value), int(candidate.view(uint)) & 1

    return min(candidates, key=key)[()]


def exact_gradient(x, y, reduction="mean", axis=None, g=1.0):  # type: ignore[no-untyped-def]
    """``sign(x - y) * round(g / count)`` (``g`` per output element for an axis), exactly:
    0 at ties, NaN where either is NaN."""
    dtype = x.dtype.name
    axes = tuple(range(x.ndim)) if axis is None else (axis,)
    count = int(np.prod([x.shape[a] for a in axes]))
    keep = tuple(1 if a in axes else n for a, n in enumerate(x.shape))
    g = np.broadcast_to(np.asarray(g, dtype=dtype), tuple(n for n in keep if n != 1) or ())
    divisor = count if reduction == "mean" else 1
    scale = np.array([_rounded(Fraction(float(v)) / divisor, dtype) for v in g.ravel()], dtype)
    scale = scale.reshape(keep)
    sign = np.where(x > y, 1.0, np.where(x < y, -1.0, np.where(x == y, 0.0, np.nan)))
    return (sign * scale).astype(dtype)


def assert_bitwise(got, expected) -> None:  # type: ignore[no-untyped-def]
    """Equal bits, NaN payloads aside (NaN where the other is NaN)."""
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    nan = np.isnan(expected)
    np.testing.assert_array_equal(np.isnan(got), nan)
    uint = {2: np.uint16, 4: np.uint32, 8: np.uint64}[got.itemsize]
    np.testing.assert_array_equal(got[~nan].view(uint), expected[~nan].view(uint))


def data(shape, dtype, seed=0):  # type: ignore[no-untyped-def]
    """Values on a coarse grid, so that ties are common, and a NaN in each operand."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-3, 4, shape).astype(dtype) / 2
    y = rng.integers(-3, 4, shape).astype(dtype) / 2
    x.reshape(-1)[1] = np.nan
    y.reshape(-1)[-2] = np.nan
    return x, y


CASES = [
    ("float32", False, "mean", None),
    ("float32", False, "sum", None),
    ("float32", False, "mean", 1),
    ("float32", True, "mean", None),
    ("float64", True, "mean", None),
    ("float64", True, "sum", 0),
]


@pytest.mark.parametrize(("dtype", "x64", "reduction", "axis"), CASES)
def test_fused_forward_gradient_is_l1_loss_grad_bitwise(spy, dtype, x64, reduction, axis) -> None:
    x, y = data((6, 35), dtype)
    expected = exact_gradient(x, y, reduction, axis)
    reference = l1.l1_loss_grad(x, y, reduction, axis=axis, backend="numba-cpu")
    assert_bitwise(reference, expected)
    with jax.enable_x64(x64):
        jx, jy = jnp.asarray(x), jnp.asarray(y)
        assert jx.dtype == dtype

        def loss(a, b):  # type: ignore[no-untyped-def]
            return l1.l1_loss(a, b, reduction, axis=axis).sum()

        SPY.calls.clear()
        value, gradient = jax.jit(jax.value_and_grad(loss))(jx, jy)
        assert [name for name, _ in SPY.calls] == ["loss_and_grad"]  # the fused forward
        assert_bitwise(gradient, expected)
        assert_bitwise(gradient, l1.l1_loss_grad(jx, jy, reduction, axis=axis))
        assert_bitwise(jax.grad(loss)(jx, jy), expected)  # eager grad: the same forward
        losses = l1.l1_loss(x, y, reduction, axis=axis, backend="numba-cpu")
        assert_bitwise(value, np.asarray(jnp.asarray(losses).sum()))


def test_the_backward_reads_the_residual_without_another_pass(spy) -> None:
    x, y = data(1000, "float32")
    jx, jy = jnp.asarray(x), jnp.asarray(y)
    value_and_grad = jax.jit(jax.value_and_grad(lambda a, b: l1.l1_loss(a, b)))
    value_and_grad(jx, jy)
    for _ in range(3):
        SPY.calls.clear()
        value, gradient = value_and_grad(jx, jy)
        gradient.block_until_ready()
        # One native pass per call, and the gradient returned is the very buffer it wrote:
        # nothing ran after it (no XLA loop over the data, no scaling, no copy).
        assert SPY.calls == [("loss_and_grad", gradient.unsafe_buffer_pointer())]
    assert_bitwise(gradient, exact_gradient(x, y))
    assert np.isnan(value)  # the NaNs reach the loss too
    # The compiled program is the custom call alone.
    compiled = value_and_grad.lower(jx, jy).compile().as_text()
    entry = compiled[compiled.index("ENTRY") :]
    assert entry.count("custom-call(") == 1 and "fusion(" not in entry, entry
    # The same for the gradient alone and for a gradient wrt target.
    SPY.calls.clear()
    gy = jax.jit(jax.grad(lambda a, b: l1.l1_loss(a, b), argnums=1))(jx, jy)
    assert [name for name, _ in SPY.calls] == ["loss_and_grad"]
    assert_bitwise(gy, -exact_gradient(x, y))


@pytest.mark.parametrize("x64", [False, True])
def test_the_backward_scales_the_residual_by_the_cotangent(spy, x64) -> None:
    # 63 elements: round(round(1/63) * g) differs from round(g/63) for g = 3, 0.1, 7.
    x, y = data((7, 9), "float32", seed=1)
    with jax.enable_x64(x64):
        jx, jy = jnp.asarray(x), jnp.asarray(y)

        def pullback(a, b, g):  # type: ignore[no-untyped-def]
            return jax.vjp(lambda t: l1.l1_loss(t, b), a)[1](g)[0]

        traced = jax.jit(pullback)
        for g in (1.0, 3.0, -0.5, 0.1, 7.0, 1e-30, 7e30):
            SPY.calls.clear()
            got = traced(jx, jy, jnp.float32(g))  # a cotangent known only at run time
            assert [name for name, _ in SPY.calls] == ["loss_and_grad"], g
            assert_bitwise(got, exact_gradient(x, y, g=g))
            assert_bitwise(got, l1.l1_loss_grad(x, y, grad_output=g, backend="numba-cpu"))
        # A constant cotangent other than 1, and one per row of an axis reduction.
        chained = jax.jit(jax.grad(lambda a, b: 3 * l1.l1_loss(a, b)))(jx, jy)
        assert_bitwise(chained, exact_gradient(x, y, g=3.0))
        rows = np.array([1.0, 2.5, 1.0, -4.0, 0.1, 7.0, 1.0], np.float32)

        def per_row(a, b, g):  # type: ignore[no-untyped-def]
            return jax.vjp(lambda t: l1.l1_loss(t, b, axis=1), a)[1](g)[0]

        SPY.calls.clear()
        got = jax.jit(per_row)(jx, jy, jnp.asarray(rows))
        assert [name for name, _ in SPY.calls] == ["loss_and_grad"]
        assert_bitwise(got, exact_gradient(x, y, axis=1, g=rows))


def test_vmap_batches_the_fused_forward_in_one_call(spy) -> None:
    x, y = data((3, 50), "float32", seed=2)
    jx, jy = jnp.asarray(x), jnp.asarray(y)
    grad = jax.grad(lambda a, b: l1.l1_loss(a, b))
    for in_axes in ((0, None), (None, 0), (0, 0)):
        SPY.calls.clear()
        a = jx if in_axes[0] == 0 else jx[0]
        b = jy if in_axes[1] == 0 else jy[0]
        got = jax.jit(jax.vmap(grad, in_axes=in_axes))(a, b)
        assert [name for name, _ in SPY.calls] == ["loss_and_grad"], in_axes  # no loop
        for k in range(3):
            a = x[k] if in_axes[0] == 0 else x[0]
            b = y[k] if in_axes[1] == 0 else y[0]
            assert_bitwise(got[k], exact_gradient(a, b))
    nested = jax.jit(jax.vmap(jax.vmap(grad)))(jnp.stack([jx, jy]), jnp.stack([jy, jx]))
    assert_bitwise(nested[1, 2], exact_gradient(y[2], x[2]))
    per_example = jax.vmap(jax.value_and_grad(lambda a, b: l1.l1_loss(a, b)), in_axes=(0, None))
    values, gradients = jax.jit(per_example)(jx, jy[0])
    assert_bitwise(gradients[2], exact_gradient(x[2], y[0]))
    for k in range(3):
        assert_bitwise(values[k], l1.l1_loss(x[k], y[0], backend="numba-cpu"))


def test_l1_loss_and_grad_under_jit_is_one_fused_call(spy) -> None:
    x, y = data((5, 8), "float32", seed=3)
    jx, jy = jnp.asarray(x), jnp.asarray(y)
    SPY.calls.clear()
    loss, gradient = jax.jit(lambda a, b: l1.l1_loss_and_grad(a, b, "sum"))(jx, jy)
    assert [name for name, _ in SPY.calls] == ["loss_and_grad"]
    assert_bitwise(gradient, exact_gradient(x, y, "sum"))
    assert_bitwise(loss, l1.l1_loss(x, y, "sum", backend="numba-cpu"))
    # It is differentiable: its loss with the spec's subgradient, its gradient constant.
    clean = np.nan_to_num(x), np.nan_to_num(y)
    hessian = jax.hessian(lambda a: l1.l1_loss_and_grad(a, jnp.asarray(clean[1]))[0])
    assert_bitwise(hessian(jnp.asarray(clean[0])), np.zeros((5, 8, 5, 8), np.float32))


@pytest.mark.parametrize(
    ("case", "options"),
    [
        ("weighted", {"weight": np.linspace(0.5, 2.0, 8, dtype=np.float32)}),
        ("input broadcast", {"broadcast": True}),
        ("float16 mean", {}),  # 1/16400 is subnormal in float16: the residual would lose it
        ("elementwise", {"reduction": "none"}),
    ],
)
def test_plans_the_fused_forward_does_not_serve_keep_their_path(spy, case, options) -> None:
    half = case == "float16 mean"
    x, y = data((2, 8200) if half else (5, 8), "float16" if half else "float32", seed=4)
    x, y = np.nan_to_num(x), np.nan_to_num(y)
    if case == "input broadcast":
        x = x[:1]
    options = dict(options)
    reduction = options.pop("reduction", "mean")
    weight = options.get("weight")
    if weight is not None:
        options["weight"] = jnp.asarray(weight)

    def loss(a, b):  # type: ignore[no-untyped-def]
        return l1.l1_loss(a, b, reduction, **options).sum()

    SPY.calls.clear()
    gradient = jax.jit(jax.grad(loss))(jnp.asarray(x), jnp.asarray(y))
    assert "loss_and_grad" not in [name for name, _ in SPY.calls]
    native = {**options, "weight": weight} if weight is not None else options
    reference = l1.l1_loss_grad(x, y, reduction, backend="numba-cpu", **native)
    if reduction == "none":  # the sum of the elementwise loss: grad_output 1 everywhere
        reference = l1.l1_loss_grad(x, y, "none", grad_output=np.ones_like(x),
                                    backend="numba-cpu")  # fmt: skip
    np.testing.assert_allclose(np.asarray(gradient), reference, rtol=2e-3 if half else 1e-6)


def test_accelerators_keep_the_fused_forward_in_xla() -> None:
    spec = jax.ShapeDtypeStruct((1 << 18,), jnp.float32)
    value_and_grad = jax.jit(jax.value_and_grad(lambda a, b: l1.l1_loss(a, b)))
    checks = [jax.export.DisabledSafetyCheck.custom_call(_ffi.TARGET)]
    for platforms, native in ((["cpu"], True), (["cuda"], False), (["rocm"], False)):
        exported = jax.export.export(value_and_grad, platforms=platforms, disabled_checks=checks)
        text = exported(spec, spec).mlir_module()
        assert (_ffi.TARGET in text) is native, platforms
        assert "callback" not in text  # never a host round trip


def test_an_error_in_the_fused_call_reaches_the_caller(spy, monkeypatch) -> None:
    def fail(plan, operands, gradient):  # type: ignore[no-untyped-def]
        raise RuntimeError("kaboom")

    monkeypatch.setattr(_ffi, "_batched_loss_and_grad", fail)
    grad = jax.jit(jax.grad(lambda a, b: l1.l1_loss(a, b)))
    with pytest.raises(Exception, match="l1backends: RuntimeError: kaboom"):
        grad(jnp.ones(7), jnp.zeros(7)).block_until_ready()


def test_the_gradient_buffer_gets_huge_pages_advised(spy, monkeypatch) -> None:
    import mmap

    advised = []
    monkeypatch.setattr(_ffi, "_MADVISE", (lambda *call: advised.append(call), 14))
    grad = jax.jit(jax.grad(lambda a, b: l1.l1_loss(a, b)))
    n = (_ffi.HUGE_PAGES_MIN // 4) + 1000
    x, y = jnp.ones(n, jnp.float32), jnp.zeros(n, jnp.float32)
    gradient = grad(x, y)
    [(start, length, advice)] = advised
    buffer, nbytes = gradient.unsafe_buffer_pointer(), gradient.nbytes
    assert advice == 14 and start % mmap.PAGESIZE == 0 and length % mmap.PAGESIZE == 0
    assert buffer <= start < buffer + mmap.PAGESIZE  # the whole pages inside the buffer
    assert buffer + nbytes - mmap.PAGESIZE < start + length <= buffer + nbytes
    advised.clear()
    grad(x[:1000], y[:1000])
    assert advised == []  # small buffers: no system call


def test_the_advice_reaches_the_kernel() -> None:
    import mmap

    if not hasattr(mmap, "MADV_HUGEPAGE"):
        pytest.skip("transparent huge pages are a Linux feature")
    memory = mmap.mmap(-1, 8 << 20)
    array = np.frombuffer(memory, np.float32)
    address = array.ctypes.data
    _ffi._advise_huge_pages(array)

    def flags() -> list[str]:
        with open("/proc/self/smaps", encoding="ascii") as smaps:
            lines = smaps.read().splitlines()
        for index, line in enumerate(lines):
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                low, high = (int(part, 16) for part in head.split("-"))
                if low <= address < high:
                    following = lines[index + 1 :]
                    return next(x for x in following if x.startswith("VmFlags:")).split()[1:]
        raise AssertionError("the mapping is not in /proc/self/smaps")

    assert "hg" in flags()  # VM_HUGEPAGE: the kernel took the advice
    del array
    memory.close()

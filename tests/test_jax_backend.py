"""The jax backend: eager hand-over, jit/grad/vmap and their nesting, the FFI custom call."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="jax is in the 'frameworks' and 'test' extras")

import jax.numpy as jnp  # noqa: E402

import l1backends as l1  # noqa: E402
from l1backends._backends.jax import _backend as jax_backend  # noqa: E402
from l1backends.registry import registry  # noqa: E402


def loss(a, b, *args, **kwargs):  # type: ignore[no-untyped-def]
    return l1.l1_loss(a, b, *args, **kwargs)


@pytest.fixture
def native_traced(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every traced reduction, however small, through the FFI custom call."""
    monkeypatch.setattr(jax_backend, "FFI_MIN", 0)
    monkeypatch.setattr(jax_backend, "FFI_MIN_NARROW", 0)


X = np.array([1.0, 2.0, 3.0, 4.0, 0.5], dtype=np.float32)
Y = np.array([0.0, 2.0, 4.0, 4.0, 1.5], dtype=np.float32)  # ties at 1 and 3


def test_arrays_and_tracers_dispatch_to_the_jax_entry() -> None:
    rows = {row.name: row for row in l1.backends()}
    assert rows["jax"].available, rows["jax"].reason
    x = jnp.asarray(X)
    assert registry.select((x, x), None, "l1_loss").__class__.__name__ == "JaxBackend"

    def kind(a):  # type: ignore[no-untyped-def]
        chosen = registry.select((a, x), None, "l1_loss")
        assert chosen.__class__.__name__ == "JaxBackend", type(a)
        return a

    jax.jit(kind)(x)
    jax.grad(lambda a: kind(a).sum())(x)
    jax.vmap(kind, in_axes=0)(jnp.stack([x, x]))


def test_grad_no_longer_sees_tracers_on_another_device() -> None:
    # The example: jax.grad raised "arrays on different devices".
    gradient = jax.grad(lambda a, b: l1.l1_loss(a, b))(jnp.asarray(X), jnp.asarray(Y))
    np.testing.assert_array_equal(gradient, np.array([0.2, 0.0, -0.2, 0.0, -0.2], np.float32))


def test_transforms_and_their_nesting_give_the_spec_subgradient() -> None:
    x, y = jnp.asarray(X), jnp.asarray(Y)
    expected = np.array([0.2, 0.0, -0.2, 0.0, -0.2], dtype=np.float32)
    grad = jax.grad(loss)
    np.testing.assert_array_equal(jax.jit(grad)(x, y), expected)
    value, gradient = jax.jit(jax.value_and_grad(loss))(x, y)
    assert float(value) == float(l1.l1_loss(X, Y)) and np.array_equal(gradient, expected)
    batch = jnp.stack([x, y, x])
    per_example = jax.vmap(grad, in_axes=(0, None))(batch, y)
    np.testing.assert_array_equal(per_example[0], expected)  # 0 at ties under vmap, not 1/n
    np.testing.assert_array_equal(jax.jit(jax.vmap(grad, in_axes=(0, None)))(batch, y), per_example)
    nested = jax.vmap(jax.vmap(loss))(jnp.stack([batch, batch]), jnp.stack([batch, batch]) + 1)
    np.testing.assert_array_equal(nested, np.ones((2, 3), np.float32))
    hessian = jax.hessian(loss)(x, y + 0.25)
    np.testing.assert_array_equal(hessian, np.zeros((5, 5), np.float32))
    for function in (l1.l1_loss_grad, l1.l1_loss_and_grad):
        jitted = jax.jit(lambda a, b, f=function: f(a, b, "sum"))
        result = jitted(x, y)
        gradient = result[1] if isinstance(result, tuple) else result
        np.testing.assert_array_equal(gradient, np.sign(X - Y))


def test_native_loss_under_transforms(native_traced) -> None:
    x, y = jnp.asarray(X), jnp.asarray(Y)
    expected = np.array([0.2, 0.0, -0.2, 0.0, -0.2], dtype=np.float32)
    value, gradient = jax.jit(jax.value_and_grad(loss))(x, y)
    assert float(value) == float(l1.l1_loss(X, Y)) and np.array_equal(gradient, expected)
    batch = jnp.stack([x, y, x])
    np.testing.assert_array_equal(
        jax.jit(jax.vmap(jax.grad(loss), in_axes=(0, None)))(batch, y)[0], expected
    )
    nested = jax.jit(jax.vmap(jax.vmap(loss)))(
        jnp.stack([batch, batch]), jnp.stack([batch] * 2) + 1
    )
    np.testing.assert_array_equal(nested, np.ones((2, 3), np.float32))
    np.testing.assert_array_equal(jax.hessian(loss)(x, y + 0.25), np.zeros((5, 5), np.float32))


def test_nan_gives_nan_gradients_under_jit_and_vmap(native_traced) -> None:
    x = jnp.asarray([1.0, np.nan, 3.0])
    y = jnp.asarray([0.0, 1.0, np.nan])
    gradient = jax.jit(jax.grad(loss))(x, y)
    assert gradient[0] == pytest.approx(1 / 3) and np.isnan(gradient[1:]).all()
    batched = jax.vmap(jax.grad(loss), in_axes=(0, None))(jnp.stack([x, x]), y)
    assert np.isnan(batched[:, 1:]).all()


def test_the_ffi_call_batches_axis_weight_and_broadcast_reductions(native_traced) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 5)).astype(np.float32)
    y = rng.standard_normal((3, 1)).astype(np.float32)
    w = rng.random(5).astype(np.float32)
    options = {"axis": 1, "weight": jnp.asarray(w), "broadcast": True}

    def batched(a, b):  # type: ignore[no-untyped-def]
        return l1.l1_loss(a, b, "mean", **options)

    got = jax.jit(jax.vmap(batched, in_axes=(0, None)))(jnp.asarray(x), jnp.asarray(y))
    for k in range(4):
        np.testing.assert_array_equal(got[k], l1.l1_loss(x[k], y, "mean", axis=1, weight=w,
                                                         broadcast=True))  # fmt: skip
    lowered = jax.jit(batched).lower(jnp.asarray(x[0]), jnp.asarray(y)).as_text()
    assert "l1backends_loss" in lowered  # the native custom call, not XLA's reduction


def test_weight_gradient_matches_jax_autodiff_of_the_formula() -> None:
    rng = np.random.default_rng(4)
    x, y = (jnp.asarray(rng.standard_normal((4, 3))) for _ in range(2))
    w = jnp.asarray(rng.random(3) + 0.5)
    for reduction in ("mean", "sum"):
        ours = jax.grad(lambda c, r=reduction: l1.l1_loss(x, y, r, weight=c))(w)

        def formula(c, r=reduction):  # type: ignore[no-untyped-def]
            terms = jnp.abs(x - y) * c
            return terms.sum() / (jnp.broadcast_to(c, (4, 3)).sum() if r == "mean" else 1)

        np.testing.assert_allclose(ours, jax.grad(formula)(w), rtol=1e-6)


def test_complex_cotangents_follow_jaxs_convention() -> None:
    z = jnp.asarray([3 + 4j, 1 - 1j], dtype=jnp.complex64)
    ours = jax.grad(lambda a: l1.l1_loss(a, jnp.zeros_like(a), "sum"))(z)
    theirs = jax.grad(lambda a: jnp.abs(a).sum())(z)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)  # the conjugate of torch's


def test_concrete_cpu_arrays_are_read_in_place(monkeypatch) -> None:
    seen = []
    native = registry.implementation("numba-cpu")

    class Spy:
        def loss(self, plan, input, target, weight):  # type: ignore[no-untyped-def]
            seen.append((input.ctypes.data, target.ctypes.data))
            return native.loss(plan, input, target, weight)

    spec = l1.BackendSpec(
        name="numpy-spy-jax",
        implementation=f"{__name__}:SPY",
        array_types=("numpy:ndarray",),
        before=("numba-cpu",),
    )
    monkeypatch.setitem(globals(), "SPY", Spy())
    l1.register_backend(spec)
    try:
        x, y = jnp.asarray(X), jnp.asarray(Y)
        value = l1.l1_loss(x, y)
    finally:
        l1.unregister_backend("numpy-spy-jax")
    assert seen == [(x.unsafe_buffer_pointer(), y.unsafe_buffer_pointer())]
    assert isinstance(value, jax.Array) and value.devices() == x.devices()
    none = l1.l1_loss(x, y, "none")
    assert none.unsafe_buffer_pointer() not in (
        x.unsafe_buffer_pointer(),
        y.unsafe_buffer_pointer(),
    )


def test_mixing_jax_with_numpy_is_refused() -> None:
    with pytest.raises(TypeError, match="different libraries"):
        l1.l1_loss(jnp.asarray(X), X)


def test_two_jax_devices_are_refused_but_tracers_are_not_checked() -> None:
    code = textwrap.dedent(
        """
        import jax, jax.numpy as jnp, l1backends as l1
        a, b = jax.devices()[:2]
        x = jax.device_put(jnp.ones(3), a)
        y = jax.device_put(jnp.zeros(3), b)
        try:
            l1.l1_loss(x, y)
        except TypeError as error:
            print("refused:", "different devices" in str(error))
        print("grad:", jax.grad(lambda t: l1.l1_loss(t, y))(jax.device_put(jnp.ones(3), b)))
        """
    )
    environment = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=120
    )
    assert "refused: True" in result.stdout, result.stdout + result.stderr
    assert "grad: [0.33333334 0.33333334 0.33333334]" in result.stdout, result.stderr


def test_float32_mean_without_x64_divides_by_the_exact_count() -> None:
    # Issue 13: 2**24 + 1 rounds to 2**24 in float32; the count is now a double word.
    n = 2**24 + 1
    with jax.enable_x64(False):
        x = jnp.full(n, 3.0, dtype=jnp.float32)
        y = jnp.zeros(n, dtype=jnp.float32)
        generic = jax.jit(lambda a, b: l1.l1_loss(a, b, backend="array-api"))
        assert generic(x, y).dtype == jnp.float32 and float(generic(x, y)) == 3.0
        gradient = jax.jit(lambda a, b: l1.l1_loss_grad(a[:1], b[:1], backend="array-api"))
        assert float(gradient(x, y)[0]) == 1.0
        scale = jax.jit(
            lambda a, b: l1.l1_loss_grad(a, b, grad_output=jnp.float32(3.0), backend="array-api")
        )
        assert float(scale(x, y)[0]) == float(np.float32(3.0 / n))
        assert float(l1.l1_loss(x, y)) == 3.0  # the jax entry: the native kernel


def test_an_error_in_the_custom_call_reaches_the_caller(native_traced, monkeypatch) -> None:
    from l1backends._backends.jax import _ffi

    def fail(plan, operands):  # type: ignore[no-untyped-def]
        raise RuntimeError("kaboom")

    monkeypatch.setattr(_ffi, "_batched_loss", fail)
    with pytest.raises(Exception, match="l1backends: RuntimeError: kaboom"):
        jax.jit(loss)(jnp.ones(7), jnp.zeros(7)).block_until_ready()

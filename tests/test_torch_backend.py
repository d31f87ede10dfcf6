"""The torch backend: zero-copy hand-over, autograd, torch.compile, devices and dtypes."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is in the 'frameworks' and 'test' extras")

import torch.nn.functional as F  # noqa: E402, N812 (torch's own spelling)

import l1backends as l1  # noqa: E402
from l1backends._backends import _interop  # noqa: E402
from l1backends._backends.torch import _backend as torch_backend  # noqa: E402
from l1backends.registry import registry  # noqa: E402


class _Spy:
    """A NumPy backend in front of numba-cpu that records what it received and returned."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, list[int], Any]] = []

    def _record(self, name: str, arrays: tuple[Any, ...], result: Any) -> Any:
        pointers = [a.ctypes.data for a in arrays if isinstance(a, np.ndarray)]
        self.seen.append((name, pointers, result))
        return result

    def loss(self, plan, input, target, weight):  # type: ignore[no-untyped-def]
        result = registry.implementation("numba-cpu").loss(plan, input, target, weight)
        return self._record("loss", (input, target, weight), result)

    def grad(self, plan, input, target, weight, grad_output):  # type: ignore[no-untyped-def]
        result = registry.implementation("numba-cpu").grad(plan, input, target, weight, grad_output)
        return self._record("grad", (input, target, weight), result)

    def loss_and_grad(self, plan, input, target, weight, grad_output):  # type: ignore[no-untyped-def]
        native = registry.implementation("numba-cpu")
        result = native.loss_and_grad(plan, input, target, weight, grad_output)
        return self._record("loss_and_grad", (input, target, weight), result)


SPY = _Spy()


@pytest.fixture
def spy():
    spec = l1.BackendSpec(
        name="numpy-spy",
        implementation=f"{__name__}:SPY",
        array_types=("numpy:ndarray",),
        before=("numba-cpu",),
    )
    l1.register_backend(spec)
    SPY.seen.clear()
    try:
        yield SPY
    finally:
        l1.unregister_backend("numpy-spy")


def test_tensors_dispatch_to_the_torch_entry_then_the_numpy_kernels(caplog) -> None:
    rows = {row.name: row for row in l1.backends()}
    assert rows["torch"].available, rows["torch"].reason
    x, y = torch.arange(6.0).reshape(2, 3), torch.zeros(2, 3)
    with caplog.at_level(logging.DEBUG, logger="l1backends.dispatch"):
        value = l1.l1_loss(x, y)
    assert isinstance(value, torch.Tensor) and value.dtype == torch.float32
    assert float(value) == 2.5
    messages = " ".join(record.getMessage() for record in caplog.records)
    assert "ran 'torch'" in messages and "ran 'numba-cpu'" in messages
    parameter = torch.nn.Parameter(torch.ones(3))  # a subclass matches by its MRO
    assert float(l1.l1_loss(parameter, torch.zeros(3))) == 1.0


def test_inputs_are_read_in_place_and_results_share_the_fresh_memory(spy) -> None:
    base = torch.arange(24.0).reshape(4, 6)
    x = base[:, ::2]  # a strided view: read in place, never made contiguous
    y = torch.zeros(3).expand(4, 3)  # a zero-stride view
    out = l1.l1_loss(x, y, "none", broadcast=True)
    name, pointers, result = spy.seen[-1]
    assert name == "loss" and pointers[:2] == [x.data_ptr(), y.data_ptr()]
    assert out.data_ptr() == result.ctypes.data  # the kernel's fresh array, not a copy
    assert not np.shares_memory(result, base.numpy())
    grad = l1.l1_loss_grad(x, y, broadcast=True)
    name, pointers, result = spy.seen[-1]
    assert pointers[:2] == [x.data_ptr(), y.data_ptr()] and grad.data_ptr() == result.ctypes.data
    torch.testing.assert_close(out, x.abs())


def test_requires_grad_inputs_and_conjugate_views_are_read_correctly() -> None:
    z = torch.tensor([1 + 2j, -3 + 0.5j], dtype=torch.complex64)
    conjugate = z.conj()  # a lazy view with the conjugate bit set
    assert conjugate.is_conj()
    value = l1.l1_loss(conjugate, torch.zeros(2, dtype=torch.complex64), "none")
    np.testing.assert_allclose(value.numpy(), np.abs(z.numpy()), rtol=1e-6)
    gradient = l1.l1_loss_grad(conjugate, torch.zeros(2, dtype=torch.complex64), "sum")
    expected = np.conj(z.numpy()) / np.abs(z.numpy())
    np.testing.assert_allclose(gradient.numpy(), expected, rtol=1e-6)
    leaf = torch.ones(3, requires_grad=True)
    gradient = l1.l1_loss_grad(leaf, torch.zeros(3))
    assert not gradient.requires_grad  # gradients are results, outside autograd


def test_backward_gives_the_spec_subgradient_not_torchs() -> None:
    x = torch.tensor([1.0, 2.0, float("nan"), 4.0, 0.5], requires_grad=True)
    y = torch.tensor([0.0, 2.0, 1.0, 5.0, float("nan")])
    l1.l1_loss(x, y).backward()
    expected = [0.2, 0.0, float("nan"), -0.2, float("nan")]
    np.testing.assert_array_equal(x.grad.numpy(), np.array(expected, dtype=np.float32))
    theirs = x.detach().clone().requires_grad_()
    F.l1_loss(theirs, y).backward()
    assert theirs.grad[2] == 0  # torch's convention, which the spec deliberately differs from


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_backward_matches_l1_loss_grad_for_any_grad_output(reduction: str) -> None:
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.standard_normal((5, 4)).astype(np.float32)).requires_grad_()
    y = torch.from_numpy(rng.standard_normal((5, 4)).astype(np.float32)).requires_grad_()
    w = torch.from_numpy(rng.random(4).astype(np.float32))
    for weight in (None, w):
        loss = l1.l1_loss(x, y, reduction, weight=weight)
        g = torch.full(loss.shape, 0.37) if loss.dim() else torch.tensor(0.37)
        gx, gy = torch.autograd.grad(loss, (x, y), g)
        expected = l1.l1_loss_grad(x, y, reduction, weight=weight, grad_output=g)
        assert torch.equal(gx, expected)  # the scale is rounded once, as l1_loss_grad does
        assert torch.equal(gy, -expected)


def test_axis_and_broadcast_gradients_are_summed_back_to_each_operand() -> None:
    x = torch.randn(3, 1, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randn(5, 1, dtype=torch.float64, requires_grad=True)
    loss = l1.l1_loss(x, y, "mean", axis=(0, 2), broadcast=True)
    g = torch.linspace(0.5, 2.0, 5, dtype=torch.float64)
    gx, gy = torch.autograd.grad(loss, (x, y), g)
    assert gx.shape == x.shape and gy.shape == y.shape
    torch.testing.assert_close(gx, l1.l1_loss_grad(x, y, "mean", axis=(0, 2), broadcast=True,
                                                   grad_output=g))  # fmt: skip
    torch.testing.assert_close(gy, l1.l1_loss_grad(y, x, "mean", axis=(0, 2), broadcast=True,
                                                   grad_output=g))  # fmt: skip


def test_gradcheck_in_float64_away_from_ties() -> None:
    rng = np.random.default_rng(2)
    x = torch.from_numpy(rng.standard_normal((3, 4))).requires_grad_()
    y = torch.from_numpy(rng.standard_normal((3, 4)) + 5).requires_grad_()
    w = torch.from_numpy(rng.random(4) + 0.5).requires_grad_()
    for reduction in ("mean", "sum", "none"):
        assert torch.autograd.gradcheck(
            lambda a, b, c, r=reduction: l1.l1_loss(a, b, r, weight=c), (x, y, w)
        )
    assert torch.autograd.gradcheck(lambda a, b: l1.l1_loss(a, b, axis=1), (x, y))


def test_the_fused_forward_keeps_its_gradient_and_backward_hands_it_over() -> None:
    n = torch_backend.FUSED_MIN
    x = torch.randn(n, requires_grad=True)
    y = torch.randn(n)
    loss = l1.l1_loss(x, y)
    kept = loss.grad_fn.unit.data_ptr()  # computed by the forward, in the same pass
    loss.backward()
    assert x.grad.data_ptr() == kept  # no scaling pass, no copy: autograd took it as .grad


def test_double_backward_has_a_zero_second_derivative() -> None:
    x = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64, requires_grad=True)
    y = torch.zeros(3, dtype=torch.float64)
    scale = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    loss = scale * l1.l1_loss(x, y, "sum")
    (gx,) = torch.autograd.grad(loss, x, create_graph=True)
    assert gx.requires_grad
    np.testing.assert_array_equal(gx.detach().numpy(), [2.0, -2.0, 2.0])
    second, d_scale = torch.autograd.grad(gx.sum(), (x, scale))
    np.testing.assert_array_equal(second.numpy(), [0.0, 0.0, 0.0])
    assert float(d_scale) == 1.0  # d/d scale of Σ scale * sign(x) = Σ sign(x)


def test_weight_that_requires_grad_gets_its_gradient() -> None:
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.standard_normal((4, 3)))
    y = torch.from_numpy(rng.standard_normal((4, 3)))
    w = torch.from_numpy(rng.random(3) + 0.5).requires_grad_()
    for reduction in ("mean", "sum", "none"):
        (ours,) = torch.autograd.grad(l1.l1_loss(x, y, reduction, weight=w).sum(), w)
        reference = w.detach().clone().requires_grad_()
        terms = (x - y).abs() * reference
        value = terms.sum() if reduction != "mean" else terms.sum() / reference.expand(4, 3).sum()
        (theirs,) = torch.autograd.grad(value, reference)
        torch.testing.assert_close(ours, theirs)


def test_torch_compile_fullgraph_forward_and_backward() -> None:
    x = torch.randn(64, 3, requires_grad=True)
    y = torch.randn(64, 3)
    x.data[0, 0] = y[0, 0]  # a tie: its gradient must be 0

    def step(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return l1.l1_loss(a, b), l1.l1_loss(a, b, "sum", axis=1)

    def objective(losses: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        # Outside the compiled graph: inductor may sum torch's own mean in another order.
        return 2 * losses[0] + losses[1].mean()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled = torch.compile(step, fullgraph=True)
        losses = compiled(x, y)
        objective(losses).backward()
    ours = [w for w in caught if "l1backends" in str(w.filename) or "array_api" in str(w.filename)]
    assert ours == []
    compiled_grad = x.grad.clone()
    x.grad = None
    eager = step(x, y)
    objective(eager).backward()
    assert all(torch.equal(a.detach(), b.detach()) for a, b in zip(losses, eager, strict=True))
    assert torch.equal(compiled_grad, x.grad) and compiled_grad[0, 0] == 0
    # The other ops through dynamo and AOTAutograd only: inductor's code generation is
    # torch's, and slow on two cores.
    gradient = torch.compile(
        lambda a, b: l1.l1_loss_grad(a, b, grad_output=2.0), fullgraph=True, backend="aot_eager"
    )
    assert torch.equal(gradient(x, y), l1.l1_loss_grad(x, y, grad_output=2.0))
    with pytest.raises(Exception, match=r"cannot run under torch\.compile"):
        forced = torch.compile(
            lambda a, b: l1.l1_loss(a, b, backend="numba-cpu"), fullgraph=True, backend="aot_eager"
        )
        forced(x, y)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.bool])
def test_unsupported_torch_dtypes_are_named(dtype: torch.dtype) -> None:
    name = str(dtype).rsplit(".", 1)[-1]
    with pytest.raises(TypeError, match=name):
        l1.l1_loss(torch.ones(3, dtype=dtype), torch.ones(3))


def test_integer_tensors_are_promoted() -> None:
    value = l1.l1_loss(torch.tensor([1, 5, -3]), torch.tensor([2, 5, 0]))
    assert value.dtype == torch.float64 and float(value) == 4 / 3


def test_two_devices_or_a_numpy_array_are_refused() -> None:
    with pytest.raises(TypeError, match="different devices"):
        l1.l1_loss(torch.ones(3), torch.ones(3, device="meta"))
    with pytest.raises(TypeError, match="different libraries"):
        l1.l1_loss(torch.ones(3), np.ones(3, dtype=np.float32))
    with pytest.raises(TypeError, match="different devices"):
        l1.l1_loss_grad(torch.ones(3), torch.ones(3), grad_output=torch.ones((), device="meta"))


def test_other_devices_run_torch_operations_on_that_device() -> None:
    x = torch.ones(2, 3, device="meta")
    value = l1.l1_loss(x, torch.zeros(2, 3, device="meta"), "sum", axis=0)
    assert value.device.type == "meta" and value.shape == (3,)


def test_cuda_tensors_are_routed_to_cupy_then_numba_cuda() -> None:
    assert _interop.cuda_route(lambda name: True) == "cupy"
    assert _interop.cuda_route(lambda name: name == "numba-cuda") == "numba-cuda"
    assert _interop.cuda_route(lambda name: False) is None

    class Registry:
        def __init__(self, reasons: dict[str, str | None]) -> None:
            self.reasons = reasons

        def unavailable_reason(self, name: str) -> str | None:
            if name not in self.reasons:
                raise ValueError(name)
            return self.reasons[name]

    assert _interop.usable(Registry({"cupy": None}), "cupy")
    assert not _interop.usable(Registry({"cupy": "no driver"}), "cupy")
    assert not _interop.usable(Registry({}), "cupy")  # unregistered


def test_small_calls_take_the_deferred_gradient_path() -> None:
    x = torch.randn(100, requires_grad=True)
    loss = l1.l1_loss(x, torch.zeros(100))
    assert loss.grad_fn.unit is None  # below FUSED_MIN the backward computes the gradient
    loss.backward()
    torch.testing.assert_close(x.grad, torch.sign(x.detach()) / 100)


def test_torch_func_transforms_are_refused_clearly() -> None:
    x = torch.randn(4)
    with pytest.raises(TypeError, match=r"torch\.func"):
        torch.func.grad(lambda a: l1.l1_loss(a, torch.zeros(4)))(x)
    with pytest.raises(TypeError, match=r"torch\.func"):
        torch.func.vmap(lambda a: l1.l1_loss(a, torch.zeros(4)))(torch.randn(2, 4))

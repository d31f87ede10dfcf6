"""The CuPy backend without a GPU: probe, generated constants, launch planning, host logic.

Nothing here runs a kernel.  The host logic (the passes, the choice of the dense or
strided kernel, the partition, the by-value ``Layout`` argument, the buffers a call
takes) is pure Python and tested directly; the backend's ``_run`` is driven with
NumPy stand-ins for device arrays and a recorder in place of the compiled kernels.
The kernels' arithmetic is modelled in ``test_cuda_model.py``; the conformance suite
runs the real kernels wherever a device exists.
"""

from __future__ import annotations

import itertools
import re
import subprocess
import sys

import pytest

from l1backends._backends._cuda_launch import MAX_CHUNKS, Op, cuda_constants, partition
from l1backends._backends._cuda_passes import OPERANDS, partials_pass, plan_passes
from l1backends._backends._iteration import MAX_GROUP_DIMS, c_strides
from l1backends._backends.cupy import _source, probe
from l1backends._backends.cupy._plan import LAYOUT_DTYPE, Operand, plan_launch
from l1backends._backends.cupy._source import name_expressions, specialization
from l1backends.semantics import Finish, GradScale, make_plan, real_dtype

# ----- probe and laziness --------------------------------------------------------------------


def test_probe_reports_the_real_reason_or_none() -> None:
    reason = probe()
    try:
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
    except ImportError as error:
        assert reason == f"ImportError: {error}"
    except Exception as error:
        assert reason == f"{type(error).__name__}: {error}"
    else:
        assert (reason is None) == (count > 0)


def test_probe_without_cupy_gives_the_import_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cupy", None)
    reason = probe()
    assert reason is not None and re.match(r"(ModuleNotFound|Import)Error: .*cupy", reason)


def test_importing_l1backends_and_the_backend_package_imports_no_cupy() -> None:
    code = (
        "import sys, l1backends; from l1backends._backends.cupy import probe; "
        "assert callable(probe); print('cupy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_backends_lists_cupy_unavailable_with_the_driver_error_when_no_device() -> None:
    pytest.importorskip("cupy", reason="CuPy is not installed")
    import l1backends

    row = next(b for b in l1backends.backends() if b.name == "cupy")
    if row.available:
        pytest.skip("a CUDA device is present; the conformance suite covers it")
    assert row.reason == probe()
    assert re.match(r"\w+(Error|Exception)?: ", row.reason), row.reason


# ----- source and layout agree ---------------------------------------------------------------


def test_cuda_constants_are_generated_from_the_python_enums() -> None:
    defines = dict(re.findall(r"#define (L1_\w+) (\d+)", _source.SOURCE))
    for member in Op:
        assert int(defines[f"L1_OP_{member.name}"]) == member
    for member in Finish:
        assert int(defines[f"L1_FINISH_{member.name}"]) == member
    for member in GradScale:
        assert int(defines[f"L1_SCALE_{member.name}"]) == member
    assert _source.SOURCE.startswith(cuda_constants())  # generated, not kept by hand
    assert int(defines["L1_MAXD"]) == MAX_GROUP_DIMS
    assert [int(defines[f"L1_{name.upper()}"]) for name in OPERANDS] == list(range(len(OPERANDS)))


def test_layout_dtype_mirrors_the_struct() -> None:
    body = re.search(r"struct Layout \{(.*?)\};", _source.SOURCE, re.S).group(1)
    names = []
    for declared in re.findall(r"(?:long long|double) ([^;]+);", body):
        names += [re.sub(r"\[.*", "", part.strip()) for part in declared.split(",")]
    assert names == list(LAYOUT_DTYPE.names)
    dims, operands = MAX_GROUP_DIMS, len(OPERANDS)
    assert LAYOUT_DTYPE.itemsize == 8 * (10 + 2 * dims + 2 * operands * dims + 2)


# ----- planning ------------------------------------------------------------------------------


def _operands(shape, pointer=256, dtype="float32", weight=True):
    strides = c_strides(shape)
    found = {name: Operand(strides, pointer, dtype) for name in ("x", "y", "grad", "none")}
    if weight:
        found["w"] = Operand(strides, pointer, dtype)
    return found


def _main(plan, **wanted):
    options = {"g_array": False, "want_loss": True, "want_grad": False, "max_threads": 256}
    return plan_passes(plan, **{**options, **wanted})


def test_contiguous_mean_is_dense_and_chunked_by_size_alone() -> None:
    n = 10_000_000
    plan = make_plan((n,), "float32", (n,), "float32")
    (step,) = _main(plan)
    launch = plan_launch(step, "float32", plan.shape, _operands(plan.shape))
    part = partition(1, n, 4)
    assert launch.kernel == specialization("l1_dense", "float32", Op.LOSS, Finish.MEAN_BY_COUNT)
    assert launch.path == "dense:loss" and launch.grid == (part.chunks,)
    assert launch.finish == "l1_finish<F32>" and launch.chunks == part.chunks > 1
    layout = launch.layout[0]
    assert (layout["rows"], layout["count"], layout["iters"]) == (1, n, part.iters)


def test_two_to_the_28_float32_elements_make_many_waves() -> None:
    part = partition(1, 2**28, 4)
    assert part.chunks == MAX_CHUNKS and part.threads == 256 and part.iters == 16


def test_chunks_do_not_depend_on_alignment_or_strides() -> None:
    n = 100_000
    plan = make_plan((n,), "float32", (n,), "float32", "sum")
    (step,) = _main(plan)
    aligned = plan_launch(step, "float32", plan.shape, _operands(plan.shape))
    misaligned = plan_launch(step, "float32", plan.shape, _operands(plan.shape, pointer=260))
    stepped = _operands(plan.shape)
    stepped["x"] = Operand((2,), 256, "float32")  # every other element of a wider array
    strided = plan_launch(step, "float32", plan.shape, stepped)
    assert aligned.path == "dense:loss"
    assert misaligned.path == strided.path == "strided:loss"
    fields = ("rows", "count", "lanes", "iters", "chunks")
    for launch in (misaligned, strided):
        assert [launch.layout[0][f] for f in fields] == [aligned.layout[0][f] for f in fields]
        assert launch.grid == aligned.grid and launch.block == aligned.block


def test_many_rows_get_one_chunk_each_and_finish_in_place() -> None:
    plan = make_plan((5000, 64), "float64", (5000, 64), "float64", "sum", axis=1)
    (step,) = _main(plan)
    launch = plan_launch(step, "float64", plan.shape, _operands(plan.shape, dtype="float64"))
    assert launch.path == "dense:loss" and launch.finish is None and launch.chunks == 1
    assert launch.layout[0]["kstride"][OPERANDS.index("x")][0] == 64


def test_rows_off_the_vector_boundary_take_the_strided_kernel_in_the_same_order() -> None:
    plan = make_plan((3, 7), "float32", (3, 7), "float32", "sum", axis=1)
    (step,) = _main(plan)
    launch = plan_launch(step, "float32", plan.shape, _operands(plan.shape))
    assert launch.path == "strided:loss" and launch.layout[0]["lanes"] == 4


def test_weighted_mean_gradient_sums_the_weight_first_along_its_layout() -> None:
    plan = make_plan((8, 16), "float32", (8, 16), "float32", "mean", (1, 16), "float32", axis=1)
    weight_sum, main = _main(plan, want_grad=True)
    operands = _operands(plan.shape)
    operands["w"] = Operand((0, 1), 256, "float32")  # broadcast along the kept axis
    operands["sw"] = Operand((1, 0), 512, "float64")
    assert weight_sum.sink == "weight-sum" and weight_sum.operands == ("w",)
    assert plan_launch(weight_sum, "float32", plan.shape, operands).path == "strided:weight-sum"
    assert main.operands == ("x", "y", "w", "sw", "grad") and main.scale is GradScale.BY_WEIGHT_SUM
    assert plan_launch(main, "float32", plan.shape, operands).path == "strided:loss"


def test_gradient_sum_back_is_strided_with_rows_over_the_input() -> None:
    plan = make_plan((3, 1), "complex64", (4, 3, 5), "complex64", broadcast=True)
    (step,) = _main(plan, want_loss=False, want_grad=True)
    operands = _operands(plan.shape, dtype="complex64")
    operands["x"] = Operand((0, 1, 0), 256, "complex64")
    launch = plan_launch(step, "complex64", plan.shape, operands)
    assert launch.kernel == "l1_strided<C64>" and launch.path == "strided:grad-sum"
    assert (launch.layout[0]["rows"], launch.layout[0]["count"]) == (3, 20)


def test_every_planned_specialization_is_compiled_by_the_nvrtc_test() -> None:
    compiled = set(name_expressions())
    planned = set()
    for dtype in _source.TAGS:
        for shape, axis in (((50_000,), None), ((16, 64), 1)):
            for reduction in ("none", "mean", "sum"):
                for weighted in (False, True):
                    plan = make_plan(
                        shape, dtype, shape, dtype, reduction,
                        shape if weighted else None, real_dtype(dtype) if weighted else None,
                        None if reduction == "none" else axis,
                    )  # fmt: skip
                    steps = [partials_pass(plan, 256)] if reduction == "sum" else []
                    for loss, grad, g in ((1, 0, 0), (0, 1, 0), (1, 1, 0), (1, 1, 1), (0, 1, 1)):
                        steps += _main(plan, want_loss=bool(loss), want_grad=bool(grad),
                                       g_array=bool(g))  # fmt: skip
                    for step, pointer in itertools.product(steps, (256, 260)):
                        operands = _operands(shape, pointer, dtype=dtype)
                        operands["g"] = Operand(c_strides(shape), pointer, dtype)
                        operands["sw"] = Operand(c_strides(shape), 256, "float64")
                        launch = plan_launch(step, dtype, shape, operands)
                        planned |= {launch.kernel, launch.finish} - {None}
    assert planned == compiled

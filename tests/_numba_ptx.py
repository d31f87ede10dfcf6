"""Compile the numba-cuda kernels to PTX for one compute capability (run as a script).

``python _numba_ptx.py MAJOR MINOR OUTDIR [--all]`` writes one PTX file per case and
prints a JSON list of the cases.  It runs in a subprocess because
``numba.cuda.compile_ptx`` is unavailable under the CUDA simulator.  Without
``--all`` only the cases marked for every capability are compiled.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numba.cuda.dispatcher as dispatcher
import numpy as np
from numba import cuda, typeof
from numba.cuda import types

CC = (int(sys.argv[1]), int(sys.argv[2]))
# Device functions ask the current device for its compute capability while they are
# typed; with no driver, answer with the capability being compiled for.
dispatcher.get_current_device = lambda: SimpleNamespace(compute_capability=CC)

from l1backends._backends._cuda_launch import Op  # noqa: E402
from l1backends._backends.numba_cuda._device import Operand, Sink  # noqa: E402
from l1backends._backends.numba_cuda._kernels import (  # noqa: E402
    LAUNCH_BOUNDS,
    Layout,
    Spec,
    make_kernels,
)
from l1backends.semantics import Finish, GradScale  # noqa: E402

REAL = {"complex64": "float32", "complex128": "float64", "int64": "float64", "int32": "float64"}


def operand(dtype: str, dims: tuple[int, int] = (1, 1), result: str | None = None):
    mode = np.dtype(result or REAL.get(dtype, dtype)).type(0)
    return Operand(np.zeros(1, dtype), 0, ((0,) * dims[0], (0,) * dims[1]), mode)


def sink(dtype: str):
    return Sink(np.zeros(1, dtype), 0, 1, 0)


def layout(dims: tuple[int, int] | None):
    shapes = ((), ()) if dims is None else ((1,) * dims[0], (1,) * dims[1])
    return Layout(1, 1, 4, 1, 1, *shapes, 1.0)


def pass_args(dims=None, **given):
    """x, y, w, g, sw, grad, none, sink, partials, layout, g_scalar (absent: None)."""
    names = ("x", "y", "w", "g", "sw", "grad", "none", "sink")
    values = [given.get(name) for name in names]
    return (*values, np.zeros(1), layout(dims), 1.0)


def cases():
    """(label, kernel, spec, shuffle, arguments, every capability?)."""
    found = []
    for dtype in ("float16", "float32", "float64"):
        x = operand(dtype)
        mean = Spec(Op.LOSS, Finish.MEAN_BY_COUNT, GradScale.PLAIN, dtype)
        both = Spec(Op.LOSS | Op.GRAD, Finish.MEAN_BY_COUNT, GradScale.BY_COUNT, dtype)
        hot = dtype != "float64"
        found.append((f"dense mean {dtype}", "dense_pass", mean, True,
                      pass_args(x=x, y=x, sink=sink(dtype)), hot))  # fmt: skip
        found.append((f"dense loss_and_grad {dtype}", "dense_pass", both, True,
                      pass_args(x=x, y=x, grad=x, sink=sink(dtype)), hot))  # fmt: skip
    f32 = operand("float32")
    sw = operand("float64", result="float32")
    weighted = Spec(Op.LOSS | Op.GRAD | Op.WEIGHT, Finish.MEAN_BY_WEIGHT, GradScale.BY_WEIGHT_SUM,
                    "float32")  # fmt: skip
    grad = Spec(Op.GRAD, Finish.NONE, GradScale.BY_COUNT, "float32")
    none = Spec(Op.ELEMENTWISE | Op.NONE_OUT | Op.GRAD | Op.G_ARRAY, dtype="float32")
    weight_sum = Spec(Op.WEIGHT_SUM | Op.WEIGHT, Finish.SUM, dtype="float32")
    found += [
        ("dense weighted loss_and_grad float32", "dense_pass", weighted, True,
         pass_args(x=f32, y=f32, w=f32, sw=sw, grad=f32, sink=sink("float32")), False),
        ("dense grad float32", "dense_pass", grad, True, pass_args(x=f32, y=f32, grad=f32), False),
        ("dense none float32", "dense_pass", none, True,
         pass_args(x=f32, y=f32, g=f32, grad=f32, none=f32), False),
        ("dense weight-sum float32", "dense_pass", weight_sum, True,
         pass_args(w=f32, sink=sink("float64")), False),
    ]  # fmt: skip
    c64, c128 = operand("complex64"), operand("complex128")
    f64 = operand("float64")
    found += [
        ("strided sum float32", "strided_pass", Spec(Op.LOSS, Finish.SUM, dtype="float32"), True,
         pass_args((1, 2), x=operand("float32", (1, 2)), y=operand("float32", (1, 2)),
                   sink=sink("float32")), False),
        ("strided loss_and_grad complex64", "strided_pass",
         Spec(Op.LOSS | Op.GRAD, Finish.MEAN_BY_COUNT, GradScale.BY_COUNT, "complex64"), True,
         pass_args((1, 1), x=c64, y=c64, grad=f32, sink=sink("float32")), False),
        ("strided loss_and_grad complex128", "strided_pass",
         Spec(Op.LOSS | Op.GRAD, Finish.MEAN_BY_COUNT, GradScale.BY_COUNT, "complex128"), True,
         pass_args((1, 1), x=c128, y=c128, grad=f64, sink=sink("float64")), True),
        ("strided mixed integers", "strided_pass", Spec(Op.LOSS, Finish.SUM, dtype="float64"), True,
         pass_args((1, 1), x=operand("int64"), y=operand("int32"), sink=sink("float64")), False),
        ("strided grad-sum complex128", "strided_pass",
         Spec(Op.GRAD_SUM | Op.WEIGHT | Op.G_ARRAY, Finish.SUM, GradScale.BY_WEIGHT_SUM,
              "complex128"), True,
         pass_args((2, 2), x=operand("complex128", (2, 2)), y=operand("complex128", (2, 2)),
                   w=operand("float64", (2, 2)), g=operand("float64", (2, 2)),
                   sw=operand("float64", (2, 2)), sink=sink("float64")), False),
        ("strided none float16", "strided_pass",
         Spec(Op.ELEMENTWISE | Op.NONE_OUT | Op.GRAD | Op.WEIGHT, dtype="float16"), True,
         pass_args((1, 4), x=operand("float16", (1, 4)), y=operand("float16", (1, 4)),
                   w=operand("float16", (1, 4)), grad=operand("float16", (1, 4)),
                   none=operand("float16", (1, 4))), False),
        ("finish mean float32", "finish_pass", Spec(Op.LOSS, Finish.MEAN_BY_COUNT, dtype="float32"),
         True, (np.zeros(1), sink("float32"), layout(None)), True),
        ("finish words float64", "finish_pass",
         Spec(Op.LOSS | Op.WEIGHT, Finish.NONE, dtype="float64"), True,
         (np.zeros(1), sink("float64"), layout(None)), False),
        ("simulator's dense mean float32", "dense_pass",
         Spec(Op.LOSS, Finish.MEAN_BY_COUNT, dtype="float32"), False,
         pass_args(x=f32, y=f32, sink=sink("float32")), True),
        ("simulator's strided loss_and_grad complex128", "strided_pass",
         Spec(Op.LOSS | Op.GRAD, Finish.MEAN_BY_COUNT, GradScale.BY_COUNT, "complex128"), False,
         pass_args((1, 1), x=c128, y=c128, grad=f64, sink=sink("float64")), False),
    ]  # fmt: skip
    return found


def signature(arguments) -> tuple:
    return tuple(types.none if value is None else typeof(value) for value in arguments)


def flat_parameters(ty) -> int:
    """Kernel parameters numba's launcher passes for an argument of type ``ty``: an array's
    five fields and its shape and strides, a tuple's members, one for a scalar, and one for
    None (which the backend's launcher extension passes as a null pointer)."""
    if isinstance(ty, types.Array):
        return 5 + 2 * ty.ndim
    if isinstance(ty, types.BaseTuple):
        return sum(flat_parameters(member) for member in ty)
    return 1


def main() -> None:
    folder = Path(sys.argv[3])
    every = "--all" in sys.argv
    report = []
    for index, (label, kernel, spec, shuffle, arguments, always) in enumerate(cases()):
        if not (every or always):
            continue
        function = getattr(make_kernels(spec, shuffle), kernel)
        bounds = LAUNCH_BOUNDS[kernel]
        ptx, _ = cuda.compile_ptx(function, signature(arguments), cc=CC, launch_bounds=bounds)
        path = folder / f"case{index}.ptx"
        path.write_text(ptx)
        facts = {"label": label, "kernel": kernel, "shuffle": shuffle, "dtype": spec.dtype,
                 "parameters": sum(map(flat_parameters, signature(arguments))),
                 "absent": sum(value is None for value in arguments)}  # fmt: skip
        report.append({**facts, "op": int(spec.op), "finish": spec.finish.name, "ptx": str(path)})
    print(json.dumps(report))


if __name__ == "__main__":
    main()

"""Typing-time specializations of the numba-cuda device helpers (real GPUs only).

:func:`install` registers ``@overload`` implementations of the dtype-driven helpers
of :mod:`._device` (so that, in compiled code, each operand's conversion is chosen
by its type) and builds the 128-bit load and store
intrinsics.  The CUDA simulator never imports this module: it runs the plain
Python definitions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from llvmlite import ir
from numba.cuda import types
from numba.cuda.extending import (  # type: ignore[attr-defined]  # mypy reads the simulator's stubs
    intrinsic,
    overload,
)

__all__ = ["install"]

_VECTOR_BITS = 128


def _width(dtype: Any) -> int:
    return max(1, _VECTOR_BITS // dtype.bitwidth)


def _numpy_type(dtype: Any) -> Any:
    return np.dtype(str(dtype)).type


def _register_load(load: Callable[..., Any]) -> None:
    @overload(load)
    def load_impl(operand, index):
        dtype, mode = operand[0].dtype, operand[3]
        rounding = _numpy_type(mode)
        if isinstance(dtype, types.Complex):
            if dtype.underlying_float == mode:

                def complex_exact(operand, index):
                    value = operand.data[index]
                    return np.float64(value.real), np.float64(value.imag)

                return complex_exact

            def complex_rounded(operand, index):
                value = operand.data[index]
                return np.float64(rounding(value.real)), np.float64(rounding(value.imag))

            return complex_rounded
        if dtype == mode:

            def real_exact(operand, index):
                return np.float64(operand.data[index]), 0.0

            return real_exact

        def real_rounded(operand, index):
            return np.float64(rounding(operand.data[index])), 0.0

        return real_rounded


def _element_type(dtype: Any) -> Any:
    return {16: ir.HalfType(), 32: ir.FloatType(), 64: ir.DoubleType()}[dtype.bitwidth]


def _vector_load() -> Any:
    @intrinsic
    def vector_load(typingctx, array, index):
        """Load 16 aligned bytes at once and widen every lane to float64."""
        width = _width(array.dtype)
        result = types.UniTuple(types.float64, width)

        def codegen(context, builder, signature, args):
            array_type = signature.args[0]
            data = context.make_array(array_type)(context, builder, args[0]).data
            element = _element_type(array_type.dtype)
            start = builder.mul(args[1], ir.Constant(args[1].type, width))
            pointer = builder.gep(data, [start], inbounds=True)
            # Loaded as four 32-bit words so that halves, too, come in one ld.global.v4.
            words = builder.load(
                builder.bitcast(pointer, ir.VectorType(ir.IntType(32), 4).as_pointer()), align=16
            )
            lanes = builder.bitcast(words, ir.VectorType(element, width))
            values = []
            for lane in range(width):
                value = builder.extract_element(lanes, ir.Constant(ir.IntType(32), lane))
                if element != ir.DoubleType():
                    value = builder.fpext(value, ir.DoubleType())
                values.append(value)
            return context.make_tuple(builder, result, values)

        return result(array, index), codegen

    return vector_load


def _vector_store() -> Any:
    @intrinsic
    def vector_store(typingctx, array, index, values):
        """Store ``values[:lanes]`` (a local array of ``array``'s dtype) as 16 bytes at once."""
        width = _width(array.dtype)

        def codegen(context, builder, signature, args):
            array_type, _, values_type = signature.args
            data = context.make_array(array_type)(context, builder, args[0]).data
            source = context.make_array(values_type)(context, builder, args[2]).data
            element = _element_type(array_type.dtype)
            vector = ir.Constant(ir.VectorType(element, width), None)
            for lane in range(width):
                lane_index = ir.Constant(ir.IntType(64), lane)
                value = builder.load(builder.gep(source, [lane_index], inbounds=True))
                if value.type != element:  # numba keeps halves in memory as 16-bit integers
                    value = builder.bitcast(value, element)
                vector = builder.insert_element(vector, value, ir.Constant(ir.IntType(32), lane))
            start = builder.mul(args[1], ir.Constant(args[1].type, width))
            pointer = builder.gep(data, [start], inbounds=True)
            words = builder.bitcast(vector, ir.VectorType(ir.IntType(32), 4))
            target = builder.bitcast(pointer, ir.VectorType(ir.IntType(32), 4).as_pointer())
            builder.store(words, target, align=16)
            return context.get_dummy_value()

        return types.none(array, index, values), codegen

    return vector_store


def install(load: Callable[..., Any]) -> tuple[Any, Any]:
    """Register the overload of :func:`._device.load`; return the vector load and store.

    Parameters
    ----------
    load : callable
        The plain Python ``load`` of :mod:`._device`, overloaded here for compiled code.

    Returns
    -------
    tuple
        ``(vector_load, vector_store)`` intrinsics.
    """
    _register_load(load)
    return _vector_load(), _vector_store()

"""The native loss inside traced JAX code on the CPU: an XLA FFI custom call.

``jax.pure_callback`` copies its operands and results (measured here: 300 ms for a
mean of 5e7 float32 elements that the kernel takes 12 ms for), so the loss is an
XLA FFI handler instead: a C function pointer (made by ``ctypes``) that XLA calls
with its own buffers.  It views them as NumPy arrays without copying, asks the
registry for the backend that serves NumPy arrays (numba-cpu) and writes the result
into XLA's output buffers: the reduced loss (:func:`ffi_loss`), or the loss and,
from the same pass over the data, the gradient (:func:`ffi_loss_and_grad`), which
the backend writes straight into XLA's buffer (``out=``), without a copy.  XLA's
large output buffers are fresh memory whose first touch faults in every 4 KiB page;
the handler advises huge pages for the gradient's buffer first, as NumPy does for its
own large arrays (:func:`_advise_huge_pages`): at 5e7 float32 elements the pass then
takes 82 ms instead of 153 ms here.

Under ``jax.vmap`` the call is batched with ``vmap_method="expand_dims"``: the
handler receives every operand with leading batch axes (of size 1 where it is not
batched) and computes all examples in one reduction, never a loop per example.

The structures below mirror ``xla/ffi/api/c_api.h`` (XLA FFI API 0.x), which jaxlib
ships in ``jax.ffi.include_dir()``.
"""

# ctypes declares a structure's layout in a class-level ``_fields_`` list.
# ruff: noqa: RUF012

from __future__ import annotations

import ctypes
import math
import mmap
import threading
from typing import Any

import numpy as np

from ...registry import registry
from ...semantics import Plan, check_out, make_plan

__all__ = ["TARGET", "ffi_loss", "ffi_loss_and_grad", "register"]

TARGET = "l1backends_loss"

_c = ctypes


class _ExtensionBase(_c.Structure):
    _fields_ = [("struct_size", _c.c_size_t), ("type", _c.c_int), ("next", _c.c_void_p)]


class _ApiVersion(_c.Structure):
    _fields_ = [
        ("struct_size", _c.c_size_t),
        ("extension_start", _c.c_void_p),
        ("major_version", _c.c_int),
        ("minor_version", _c.c_int),
    ]


class _Metadata(_c.Structure):
    _fields_ = [
        ("struct_size", _c.c_size_t),
        ("api_version", _ApiVersion),
        ("traits", _c.c_uint32),
        ("state_type_id", _c.c_int64),
    ]


class _MetadataExtension(_c.Structure):
    _fields_ = [("extension_base", _ExtensionBase), ("metadata", _c.POINTER(_Metadata))]


class _Buffer(_c.Structure):
    _fields_ = [
        ("struct_size", _c.c_size_t),
        ("extension_start", _c.c_void_p),
        ("dtype", _c.c_int),
        ("data", _c.c_void_p),
        ("rank", _c.c_int64),
        ("dims", _c.POINTER(_c.c_int64)),
    ]


class _List(_c.Structure):
    """``XLA_FFI_Args`` and ``XLA_FFI_Rets`` share this layout."""

    _fields_ = [
        ("struct_size", _c.c_size_t),
        ("extension_start", _c.c_void_p),
        ("size", _c.c_int64),
        ("types", _c.POINTER(_c.c_int)),
        ("items", _c.POINTER(_c.c_void_p)),
    ]


class _Attrs(_c.Structure):
    _fields_ = [
        ("struct_size", _c.c_size_t),
        ("extension_start", _c.c_void_p),
        ("size", _c.c_int64),
        ("types", _c.POINTER(_c.c_int)),
        ("names", _c.c_void_p),
        ("attrs", _c.POINTER(_c.c_void_p)),
    ]


class _Scalar(_c.Structure):
    _fields_ = [("dtype", _c.c_int), ("value", _c.c_void_p)]


class _Api(_c.Structure):
    """The head of ``XLA_FFI_Api``: its version and the error constructor."""

    _fields_ = [
        ("struct_size", _c.c_size_t),
        ("extension_start", _c.c_void_p),
        ("api_version", _ApiVersion),
        ("internal_api", _c.c_void_p),
        ("error_create", _c.c_void_p),
    ]


class _CallFrame(_c.Structure):
    _fields_ = [
        ("struct_size", _c.c_size_t),
        ("extension_start", _c.POINTER(_ExtensionBase)),
        ("api", _c.POINTER(_Api)),
        ("ctx", _c.c_void_p),
        ("stage", _c.c_int),
        ("args", _List),
        ("rets", _List),
        ("attrs", _Attrs),
        ("future", _c.c_void_p),
    ]


class _ErrorCreateArgs(_c.Structure):
    _fields_ = [
        ("struct_size", _c.c_size_t),
        ("extension_start", _c.c_void_p),
        ("message", _c.c_char_p),
        ("errc", _c.c_int),
    ]


_METADATA_EXTENSION = 1
_EXECUTE = 3
_INTERNAL = 13
_ERROR_CREATE = _c.CFUNCTYPE(_c.c_void_p, _c.POINTER(_ErrorCreateArgs))

#: XLA_FFI_DataType codes of the dtypes a plan can hold.
_DTYPES = {
    2: "int8", 3: "int16", 4: "int32", 5: "int64", 6: "uint8", 7: "uint16", 8: "uint32",
    9: "uint64", 10: "float16", 11: "float32", 12: "float64", 15: "complex64", 18: "complex128",
}  # fmt: skip


def _view(pointer: int) -> np.ndarray:
    """An XLA buffer (row-major, as ffi_call lays it out by default) as a NumPy array."""
    buffer = _c.cast(pointer, _c.POINTER(_Buffer)).contents
    shape = tuple(buffer.dims[k] for k in range(buffer.rank))
    dtype = np.dtype(_DTYPES[buffer.dtype])
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes == 0 or not buffer.data:
        return np.empty(shape, dtype)
    memory = (_c.c_char * nbytes).from_address(buffer.data)
    return np.frombuffer(memory, dtype).reshape(shape)


#: Buffers from this many bytes get huge pages advised, as NumPy advises its own.
HUGE_PAGES_MIN = 1 << 22


def _madvise() -> Any:
    """libc's ``madvise`` and ``MADV_HUGEPAGE``, or None where the platform has neither."""
    advice = getattr(mmap, "MADV_HUGEPAGE", None)  # Linux only
    if advice is None:
        return None
    try:
        function = _c.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    function.argtypes = [_c.c_void_p, _c.c_size_t, _c.c_int]
    function.restype = _c.c_int
    return function, advice


_MADVISE = _madvise()


def _advise_huge_pages(array: np.ndarray) -> None:
    """Ask for transparent huge pages where ``array`` (an XLA buffer we are about to fill)
    covers whole pages: the first touch of fresh memory then faults once per 2 MiB instead
    of once per 4 KiB.  Advice only: a refusal (THP off, an old kernel) changes nothing."""
    if _MADVISE is None or array.nbytes < HUGE_PAGES_MIN:
        return
    function, advice = _MADVISE
    address = array.ctypes.data
    start = -(-address // mmap.PAGESIZE) * mmap.PAGESIZE
    end = (address + array.nbytes) // mmap.PAGESIZE * mmap.PAGESIZE
    if end > start:
        function(start, end - start, advice)


# ----- calls: what each custom call computes is kept here, keyed by an integer attribute ----

#: (plan, weighted, fused): fused calls also write the gradient, into their second result.
_configs: list[tuple[Plan, bool, bool]] = []
_config_ids: dict[tuple[Plan, bool, bool], int] = {}
_configs_lock = threading.Lock()


def _config_id(plan: Plan, weighted: bool, fused: bool) -> int:
    key = (plan, weighted, fused)
    try:
        return _config_ids[key]
    except KeyError:
        with _configs_lock:
            if key not in _config_ids:
                _configs.append(key)
                _config_ids[key] = len(_configs) - 1
            return _config_ids[key]


def _batched(
    plan: Plan, operands: list[np.ndarray], writes_out: bool
) -> tuple[Plan, list[np.ndarray]]:
    """The plan of every example at once: operands carry leading batch axes (size 1 if
    unbatched), broadcast here to the batch without a copy."""
    rank = len(plan.shape)
    batch_axes = operands[0].ndim - rank
    batch = np.broadcast_shapes(*(a.shape[:batch_axes] for a in operands))
    # Zero-stride views: an unbatched operand is read once per example, never copied.
    operands = [np.broadcast_to(a, batch + a.shape[batch_axes:]) for a in operands]
    x, y = operands[0], operands[1]
    w = operands[2] if len(operands) > 2 else None
    batched = make_plan(
        x.shape,
        x.dtype.name,
        y.shape,
        y.dtype.name,
        plan.reduction,
        None if w is None else w.shape,
        None if w is None else w.dtype.name,
        tuple(batch_axes + ax for ax in plan.reduced_axes),
        True,
        writes_out=writes_out,
    )
    return batched, operands


def _batched_loss(plan: Plan, operands: list[np.ndarray]) -> np.ndarray:
    """The loss of every example."""
    batched, operands = _batched(plan, operands, False)
    implementation = registry.select(tuple(operands), None, "l1_loss", batched)
    w = operands[2] if len(operands) > 2 else None
    return implementation.loss(batched, operands[0], operands[1], w)


def _batched_loss_and_grad(
    plan: Plan, operands: list[np.ndarray], gradient: np.ndarray
) -> np.ndarray:
    """The loss of every example; the gradient with respect to input, from the same pass,
    written into ``gradient`` (an XLA output buffer of the batch axes and the input's shape)."""
    batched, operands = _batched(plan, operands, True)
    implementation = registry.select(tuple(operands), None, "l1_loss_and_grad", batched)
    check_out(batched, "l1_loss_and_grad", gradient.shape, gradient.dtype.name)
    _advise_huge_pages(gradient)
    return implementation.loss_and_grad(batched, operands[0], operands[1], None, None,
                                        out=gradient)[0]  # fmt: skip


def _handle(frame_pointer: Any) -> int | None:
    frame = frame_pointer.contents
    extension = frame.extension_start
    if extension and extension.contents.type == _METADATA_EXTENSION:
        # XLA asks which FFI API version the handler speaks: the runtime's own.
        metadata = _c.cast(extension, _c.POINTER(_MetadataExtension)).contents.metadata.contents
        version = frame.api.contents.api_version
        metadata.api_version.struct_size = _c.sizeof(_ApiVersion)
        metadata.api_version.major_version = version.major_version
        metadata.api_version.minor_version = version.minor_version
        metadata.traits = 0
        return None
    if frame.stage != _EXECUTE:
        return None
    try:
        attribute = _c.cast(frame.attrs.attrs[0], _c.POINTER(_Scalar)).contents
        config = _c.cast(attribute.value, _c.POINTER(_c.c_int64)).contents.value
        plan, weighted, fused = _configs[config]
        operands = [_view(frame.args.items[k]) for k in range(3 if weighted else 2)]
        out = _view(frame.rets.items[0])
        with np.errstate(all="ignore"):
            if fused:
                out[...] = _batched_loss_and_grad(plan, operands, _view(frame.rets.items[1]))
            else:
                out[...] = _batched_loss(plan, operands)
    except Exception as error:  # reported to XLA, which raises it in the caller
        return _error(frame.api, f"l1backends: {type(error).__name__}: {error}")
    return None


def _error(api: Any, message: str) -> int | None:
    arguments = _ErrorCreateArgs(
        _c.sizeof(_ErrorCreateArgs), None, message.encode("utf-8", "replace"), _INTERNAL
    )
    create = _ERROR_CREATE(api.contents.error_create)
    return create(_c.byref(arguments))


_HANDLER = _c.CFUNCTYPE(_c.c_void_p, _c.POINTER(_CallFrame))(_handle)
_registered: bool | None = None
_register_lock = threading.Lock()


def register() -> bool:
    """Register the handler with XLA's CPU platform once; False if this jaxlib cannot."""
    global _registered
    with _register_lock:
        if _registered is None:
            import jax

            try:
                jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(_HANDLER), platform="cpu")
                _registered = True
            except Exception:  # an older or unusual jaxlib: the generic path serves
                _registered = False
        return _registered


def _operands(plan: Plan, input: Any, target: Any, weight: Any) -> list[Any]:
    import jax.numpy as jnp

    rank = len(plan.shape)

    def full_rank(array: Any) -> Any:
        # Every operand gets the loss's rank, so that batch axes added in front line up.
        return jnp.reshape(array, (1,) * (rank - array.ndim) + tuple(array.shape))

    operands = [full_rank(input), full_rank(target)]
    if weight is not None:
        operands.append(full_rank(weight))
    return operands


def ffi_loss(plan: Plan, input: Any, target: Any, weight: Any) -> Any:
    """The loss of JAX arrays (tracers) through the FFI handler; traceable, CPU only."""
    import jax
    import jax.numpy as jnp

    result = jax.ShapeDtypeStruct(plan.out_shape, jnp.dtype(plan.result_dtype))
    call = jax.ffi.ffi_call(TARGET, result, vmap_method="expand_dims")
    config = np.int64(_config_id(plan, weight is not None, False))
    return call(*_operands(plan, input, target, weight), config=config)


def ffi_loss_and_grad(plan: Plan, input: Any, target: Any) -> tuple[Any, Any]:
    """The loss and the gradient with respect to input (``grad_output`` 1) from one pass.

    Traceable, CPU only, for a plan without weight whose input has the loss's shape
    (no broadcast of input): the gradient is then one XLA buffer of the input's shape,
    and under ``vmap`` of the batch axes and that shape.
    """
    import jax
    import jax.numpy as jnp

    if plan.input_shape != plan.shape:
        raise ValueError(f"a fused call needs input of the loss's shape {plan.shape}")
    results = (
        jax.ShapeDtypeStruct(plan.out_shape, jnp.dtype(plan.result_dtype)),
        jax.ShapeDtypeStruct(plan.input_shape, jnp.dtype(plan.compute_dtype)),
    )
    call = jax.ffi.ffi_call(TARGET, results, vmap_method="expand_dims")
    config = np.int64(_config_id(plan, False, True))
    loss, gradient = call(*_operands(plan, input, target, None), config=config)
    return loss, gradient

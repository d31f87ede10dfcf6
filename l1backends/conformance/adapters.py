"""Array adapters: how the conformance suite builds and reads arrays of one library.

The suite feeds each built-in backend the adapters :data:`BUILTIN_ADAPTERS` lists;
a plugin's :class:`~l1backends.registry.BackendSpec` names the adapters that build
arrays it serves in ``test_adapters`` (``"module:attribute"`` strings).  A plugin
author whose backend serves a library not listed here writes an
:class:`ArrayAdapter` subclass in their own package and points ``test_adapters``
at an instance of it.

The adapter interface
---------------------
``name``
    Short identifier, used in test ids and messages.
``layouts``
    The memory layouts the adapter can build, a subset of :data:`LAYOUTS`.
``max_size``
    The largest number of elements per array the suite draws (small for slow
    targets such as the CUDA simulator).
``example_factor``
    Multiplies the number of hypothesis examples per test (below 1 for slow targets).
``unsupported_dtypes``
    Dtypes the library cannot hold (array-api-strict has no float16); the suite
    skips them for this adapter, saying so.
``subnormals``
    False when the library flushes subnormals to zero (XLA on CPU does); values
    are then drawn at least ``2**(emin/2)`` in magnitude, so no difference,
    product or result of the drawn calls is subnormal.
``unavailable_reason()``
    None when the library (and its device) can be used, else why not.
``from_numpy(array)``
    A C-contiguous copy of a NumPy array in the library, on its default device.
``to_numpy(array)``
    A NumPy copy of a library array (moving it to the host if needed).
``check_native(array, like)``
    None if ``array`` is an array of this library on the same device as ``like``,
    else a description of what is wrong.
``permute(array, axes)``, ``flip(array)``, ``step(array, axis, step)``,
``broadcast_to(array, shape)``
    Views built with the library's own operations: the backend under test must
    then really receive transposed, negative-stride, strided and zero-stride
    inputs.  Only those needed by ``layouts`` must be implemented.
``shares_memory(a, b)``
    Whether two arrays may overlap in memory (False when the library cannot tell).
``read_only(array)``
    The array made read-only, or None when the library has no such notion.
``repro(expression)``
    Python source that turns the NumPy ``expression`` into this library's array,
    for the one-line reproduction printed with every failure.
``imports``
    The import statement that ``repro`` needs.
``autodiff_backends`` and ``autodiff(input, target, reduction, **options)`` (optional)
    For a library with its own automatic differentiation: the backends whose ``l1_loss``
    it differentiates, and a function that runs ``l1_loss`` on the arrays (options as
    for the public function, ``backend`` included), differentiates it with the
    library's autodiff with the cotangent ``grad_output`` (None: ones) and returns
    ``(loss, gradient wrt input, gradient wrt target)``.  Gradients follow the spec's
    convention for complex inputs, ``(x - y) / |x - y|`` (a library that returns the
    conjugate converts); a gradient the library cannot take (integer arguments) is
    None.  The suite's ``autodiff`` property checks them against the exact subgradient.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from .._typing import Array

__all__ = [
    "ARRAY_API_STRICT",
    "BUILTIN_ADAPTERS",
    "CUPY",
    "DASK",
    "EXTRA_LAYOUTS",
    "JAX",
    "JAX_NATIVE",
    "LAYOUTS",
    "NUMBA_CUDA",
    "NUMPY",
    "TORCH",
    "TORCH_NATIVE",
    "ArrayAdapter",
    "build",
]


#: The layouts every strided library can build: C order, Fortran order, a transposed
#: view (axes permuted), negative strides (every axis reversed), a sliced step (every
#: second element along one axis) and a zero-stride broadcast view.
LAYOUTS = ("C", "F", "transposed", "negative", "step", "broadcast")
#: Layouts some libraries add: data starting one element past an aligned address
#: (one byte, where the library allows it), and values stored in non-native byte order.
EXTRA_LAYOUTS = ("misaligned", "swapped")


class ArrayAdapter:
    """Builds and reads arrays of one library for the conformance suite.

    Subclasses set the class attributes and override the methods of the
    interface described in this module's docstring; the defaults here use an
    Array-API namespace (``namespace()``) and suit most libraries.
    """

    name = "abstract"
    module = ""
    layouts: tuple[str, ...] = ("C",)
    max_size = 48
    example_factor = 1.0
    unsupported_dtypes: frozenset[str] = frozenset()
    subnormals = True
    imports = "import numpy as np"
    autodiff_backends: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"<conformance adapter {self.name}>"

    def namespace(self) -> Any:
        """The library's Array-API namespace."""
        return importlib.import_module(self.module)

    def unavailable_reason(self) -> str | None:
        """None when arrays can be built here, else the real reason."""
        try:
            self.from_numpy(np.zeros(2))
        except Exception as error:  # the real error is the reason reported
            return f"{type(error).__name__}: {error}"
        return None

    def from_numpy(self, array: np.ndarray) -> Array:
        """A C-contiguous copy of ``array`` in the library, on the default device."""
        # np.ascontiguousarray would turn a 0-d array into a 1-d one.
        return self.namespace().asarray(np.array(array, order="C", copy=True), copy=True)

    def to_numpy(self, array: Array) -> np.ndarray:
        """A NumPy copy of ``array``."""
        return np.array(array, copy=True)

    def array_type(self) -> type:
        """The library's array type."""
        return type(self.from_numpy(np.zeros(1)))

    def device(self, array: Array) -> Any:
        """The device ``array`` lives on (None when the library has one device)."""
        import array_api_compat

        return array_api_compat.device(array)

    def check_native(self, array: Array, like: Array) -> str | None:
        """None if ``array`` is of this library and on ``like``'s device, else what is wrong."""
        if not isinstance(array, self.array_type()):
            return f"expected a {_type_name(self.array_type())}, got a {_type_name(type(array))}"
        if self.device(array) != self.device(like):
            return f"output is on {self.device(array)}, but the inputs are on {self.device(like)}"
        return None

    def permute(self, array: Array, axes: tuple[int, ...]) -> Array:
        """A view of ``array`` with its axes permuted."""
        return self.namespace().permute_dims(array, axes)

    def flip(self, array: Array) -> Array:
        """A view of ``array`` reversed along every axis (negative strides)."""
        return array[(slice(None, None, -1),) * array.ndim]

    def step(self, array: Array, axis: int, step: int) -> Array:
        """A view of every ``step``-th element of ``array`` along ``axis``."""
        index = [slice(None)] * array.ndim
        index[axis] = slice(None, None, step)
        return array[tuple(index)]

    def broadcast_to(self, array: Array, shape: tuple[int, ...]) -> Array:
        """A zero-stride view of ``array`` broadcast to ``shape``."""
        return self.namespace().broadcast_to(array, shape)

    def shares_memory(self, a: Array, b: Array) -> bool:
        """Whether ``a`` and ``b`` may share memory (False when unknown)."""
        return False

    def read_only(self, array: Array) -> Array | None:
        """``array`` made read-only, or None when the library has no read-only arrays."""
        return None

    def misaligned(self, values: np.ndarray) -> Array:
        """``values`` in an array whose data starts one element past an aligned address."""
        padded = self.from_numpy(np.concatenate([np.zeros(1, values.dtype), values.ravel()]))
        return self.namespace().reshape(padded[1:], values.shape)

    def swapped(self, values: np.ndarray) -> Array:
        """``values`` stored in non-native byte order (only libraries that have it)."""
        raise NotImplementedError(f"{self.name} arrays have no byte order to swap")

    def other_device(self) -> Any | None:
        """A second device of this library to build arrays on, or None when there is one."""
        return None

    def to_device(self, array: Array, device: Any) -> Array:
        """A copy of ``array`` on ``device`` (one :meth:`other_device` returned)."""
        raise NotImplementedError(f"{self.name} has no second device")

    #: The largest arrays (elements) the path matrix builds: parallel and chunked kernel
    #: paths need large ones, where the library computes fast enough.
    matrix_size = 4096
    #: Whether the path matrix runs each case's three checks (False: one per case, in
    #: turn, and the per-reduction cases for one dtype only; for slow simulators).
    matrix_full = True

    def repro(self, expression: str) -> str:
        """Source turning the NumPy ``expression`` into this library's array."""
        return f"{self.module}.asarray({expression})"

    def autodiff(
        self, input: Array, target: Array, reduction: str, **options: Any
    ) -> tuple[Array, Array | None, Array | None]:
        """``(loss, d/d input, d/d target)`` by the library's autodiff (see the module doc)."""
        raise NotImplementedError(f"{self.name} arrays have no automatic differentiation")


def _type_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class _NumPy(ArrayAdapter):
    name = "numpy"
    module = "numpy"
    layouts = LAYOUTS + EXTRA_LAYOUTS
    max_size = 64
    matrix_size = (1 << 20) + 3  # the flat kernels run in parallel from 2**20 elements

    def misaligned(self, values: np.ndarray) -> Array:
        # One byte past an aligned address: no element is aligned to its own size.
        buffer = np.empty(values.nbytes + 1, np.uint8)
        array = np.ndarray(values.shape, values.dtype, buffer=buffer, offset=1)
        array[...] = values
        return array

    def swapped(self, values: np.ndarray) -> Array:
        return np.array(values, dtype=values.dtype.newbyteorder())

    def from_numpy(self, array: np.ndarray) -> Array:
        return np.array(array, order="C", copy=True)

    def array_type(self) -> type:
        return np.ndarray

    def device(self, array: Array) -> Any:
        return "cpu"

    def permute(self, array: Array, axes: tuple[int, ...]) -> Array:
        return array.transpose(axes)

    def broadcast_to(self, array: Array, shape: tuple[int, ...]) -> Array:
        return np.broadcast_to(array, shape)

    def shares_memory(self, a: Array, b: Array) -> bool:
        return bool(np.may_share_memory(a, b))

    def read_only(self, array: Array) -> Array:
        view = array.view()
        view.flags.writeable = False
        return view

    def repro(self, expression: str) -> str:
        return expression


class _ArrayAPIStrict(ArrayAdapter):
    name = "array-api-strict"
    module = "array_api_strict"
    unsupported_dtypes = frozenset({"float16"})
    example_factor = 0.5
    imports = "import numpy as np, array_api_strict"

    def other_device(self) -> Any:
        return self.namespace().Device("device1")

    def to_device(self, array: Array, device: Any) -> Array:
        return self.namespace().asarray(array, device=device, copy=True)

    def to_numpy(self, array: Array) -> np.ndarray:
        # array-api-strict exposes no __array__ in recent versions; go through DLPack.
        return np.array(np.from_dlpack(array), copy=True)


class _Torch(ArrayAdapter):
    name = "torch"
    module = "torch"
    # torch has no negative strides.
    layouts = ("C", "F", "transposed", "step", "broadcast")
    imports = "import numpy as np, torch"

    def from_numpy(self, array: np.ndarray) -> Array:
        import torch

        return torch.from_numpy(np.array(array, order="C", copy=True))

    def to_numpy(self, array: Array) -> np.ndarray:
        return array.detach().cpu().numpy().copy()

    def array_type(self) -> type:
        import torch

        return torch.Tensor

    def device(self, array: Array) -> Any:
        return array.device

    def permute(self, array: Array, axes: tuple[int, ...]) -> Array:
        return array.permute(axes)

    def broadcast_to(self, array: Array, shape: tuple[int, ...]) -> Array:
        return array.expand(shape)

    def shares_memory(self, a: Array, b: Array) -> bool:
        if a.device != b.device or 0 in (a.numel(), b.numel()):
            return False
        storage_a, storage_b = a.untyped_storage(), b.untyped_storage()
        start_a, start_b = storage_a.data_ptr(), storage_b.data_ptr()
        return start_a < start_b + storage_b.nbytes() and start_b < start_a + storage_a.nbytes()

    def repro(self, expression: str) -> str:
        return f"torch.from_numpy({expression})"

    autodiff_backends = ("torch",)

    def autodiff(
        self, input: Array, target: Array, reduction: str, **options: Any
    ) -> tuple[Array, Array | None, Array | None]:
        """``l1_loss(...).backward(grad_output)`` through ``torch.autograd``."""
        import torch

        from .. import api

        grad_output = options.pop("grad_output", None)
        leaves = [
            a.detach().requires_grad_() if a.is_floating_point() or a.is_complex() else None
            for a in (input, target)
        ]
        x, y = (
            leaf if leaf is not None else a for leaf, a in zip(leaves, (input, target), strict=True)
        )
        loss = api.l1_loss(x, y, reduction, **options)
        if grad_output is None:
            g = torch.ones_like(loss)
        elif isinstance(grad_output, float):
            g = torch.full_like(loss, grad_output)
        else:
            g = torch.from_numpy(np.asarray(grad_output)).to(loss.dtype).expand(loss.shape)
        wanted = [leaf for leaf in leaves if leaf is not None]
        found = iter(torch.autograd.grad(loss, wanted, g) if wanted else ())
        gx, gy = (next(found) if leaf is not None else None for leaf in leaves)
        return loss.detach(), gx, gy


class _Jax(ArrayAdapter):
    """JAX arrays; importing the adapter's library enables ``jax_enable_x64``.

    Without it JAX silently turns float64 into float32, so the suite could not
    build the float64 and complex128 inputs a backend declares.  XLA on the CPU
    flushes subnormals to zero, so no subnormal values are drawn.  Eager JAX is
    slow on the many small operations of the generic backend: fewer examples.
    """

    name = "jax"
    module = "jax.numpy"
    subnormals = False
    max_size = 16
    example_factor = 0.35
    imports = "import numpy as np, jax; jax.config.update('jax_enable_x64', True)"

    def namespace(self) -> Any:
        import jax

        jax.config.update("jax_enable_x64", True)
        return importlib.import_module("jax.numpy")

    def from_numpy(self, array: np.ndarray) -> Array:
        return self.namespace().asarray(np.array(array, order="C", copy=True))

    def array_type(self) -> type:
        import jax

        return jax.Array

    def device(self, array: Array) -> Any:
        return tuple(sorted(map(str, array.devices())))

    def repro(self, expression: str) -> str:
        return f"jax.numpy.asarray({expression})"

    autodiff_backends = ("jax",)

    def autodiff(
        self, input: Array, target: Array, reduction: str, **options: Any
    ) -> tuple[Array, Array | None, Array | None]:
        """``jax.vjp`` of ``l1_loss`` under ``jax.jit``, gradients conjugated to the spec's."""
        import jax
        import jax.numpy as jnp

        from .. import api

        grad_output = options.pop("grad_output", None)
        weight = options.pop("weight", None)

        def loss_and_pullback(x: Array, y: Array, w: Array | None, g: Array) -> Any:
            loss, pullback = jax.vjp(
                lambda a, b: api.l1_loss(a, b, reduction, weight=w, **options), x, y
            )
            cotangent = jnp.broadcast_to(jnp.asarray(g, dtype=loss.dtype), loss.shape)
            return loss, *pullback(cotangent)

        g = 1.0 if grad_output is None else np.asarray(grad_output)
        loss, gx, gy = jax.jit(loss_and_pullback)(input, target, weight, g)

        def spec(gradient: Array, primal: Array) -> Array | None:
            if not jnp.issubdtype(primal.dtype, jnp.inexact):
                return None
            return jnp.conj(gradient) if jnp.iscomplexobj(gradient) else gradient

        return loss, spec(gx, input), spec(gy, target)


class _NumbaCUDA(ArrayAdapter):
    """numba-cuda device arrays; under ``NUMBA_ENABLE_CUDASIM=1`` the simulator's arrays.

    Transposed and broadcast views are built from the base array's memory with
    explicit strides (numba's own ``transpose`` copies through a kernel).
    """

    name = "numba-cuda"
    module = "numba.cuda"
    layouts = (*LAYOUTS, "misaligned")
    # The simulator runs one Python thread per CUDA thread: keep arrays and examples few.
    max_size = 12
    example_factor = 0.25
    # Rows over 512 float32 elements are cut into chunks under the simulator.
    matrix_size = 640
    matrix_full = False
    imports = "import numpy as np; from numba import cuda"

    def from_numpy(self, array: np.ndarray) -> Array:
        from numba import cuda

        return cuda.to_device(np.array(array, order="C", copy=True))

    def to_numpy(self, array: Array) -> np.ndarray:
        return np.array(array.copy_to_host(), copy=True)

    def array_type(self) -> type:
        from numba import cuda

        if cuda.is_available() and not _simulated():
            from numba.cuda.cudadrv.devicearray import DeviceNDArray

            return DeviceNDArray
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

        return FakeCUDAArray

    def device(self, array: Array) -> Any:
        if _simulated():
            return "simulator"
        from numba import cuda

        return cuda.get_current_device().id

    def _strided(self, base: Array, shape: tuple[int, ...], strides: tuple[int, ...]) -> Array:
        if _simulated():
            from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

            host = np.lib.stride_tricks.as_strided(base._ary, shape, strides, writeable=False)
            return FakeCUDAArray(host)
        from numba.cuda.cudadrv.devicearray import DeviceNDArray

        return DeviceNDArray(shape, strides, base.dtype, gpu_data=base.gpu_data)

    def misaligned(self, values: np.ndarray) -> Array:
        padded = self.from_numpy(np.concatenate([np.zeros(1, values.dtype), values.ravel()]))
        return padded[1:].reshape(values.shape)

    def permute(self, array: Array, axes: tuple[int, ...]) -> Array:
        shape = tuple(array.shape[ax] for ax in axes)
        strides = tuple(array.strides[ax] for ax in axes)
        return self._strided(array, shape, strides)

    def broadcast_to(self, array: Array, shape: tuple[int, ...]) -> Array:
        lead = len(shape) - array.ndim
        strides = (0,) * lead + tuple(
            0 if n == 1 and m != 1 else s
            for n, m, s in zip(array.shape, shape[lead:], array.strides, strict=True)
        )
        return self._strided(array, shape, strides)

    def shares_memory(self, a: Array, b: Array) -> bool:
        if _simulated():
            return bool(np.may_share_memory(a._ary, b._ary))
        return _cai_overlap(a, b)

    def repro(self, expression: str) -> str:
        return f"cuda.to_device({expression})"


def _simulated() -> bool:
    from numba import config

    return bool(getattr(config, "ENABLE_CUDASIM", 0))


def _extent(array: Array) -> tuple[int, int]:
    """The byte range ``[low, high)`` that a device array's elements occupy."""
    start = array.__cuda_array_interface__["data"][0]
    if array.size == 0:
        return start, start
    low = start + sum(min(0, (n - 1) * s) for n, s in zip(array.shape, array.strides, strict=True))
    high = start + sum(max(0, (n - 1) * s) for n, s in zip(array.shape, array.strides, strict=True))
    return low, high + array.dtype.itemsize


def _cai_overlap(a: Array, b: Array) -> bool:
    """Whether two ``__cuda_array_interface__`` arrays' byte ranges overlap."""
    low_a, high_a = _extent(a)
    low_b, high_b = _extent(b)
    return low_a < high_b and low_b < high_a


class _CuPy(ArrayAdapter):
    name = "cupy"
    module = "cupy"
    layouts = (*LAYOUTS, "misaligned")
    imports = "import numpy as np, cupy"

    def from_numpy(self, array: np.ndarray) -> Array:
        import cupy

        return cupy.asarray(np.array(array, order="C", copy=True))

    def to_numpy(self, array: Array) -> np.ndarray:
        return array.get()

    def array_type(self) -> type:
        import cupy

        return cupy.ndarray

    def device(self, array: Array) -> Any:
        return array.device.id

    def permute(self, array: Array, axes: tuple[int, ...]) -> Array:
        return array.transpose(axes)

    def shares_memory(self, a: Array, b: Array) -> bool:
        import cupy

        return bool(cupy.may_share_memory(a, b))

    def repro(self, expression: str) -> str:
        return f"cupy.asarray({expression})"


class _Dask(ArrayAdapter):
    """Dask arrays of a few chunks (so backends must combine partial sums)."""

    name = "dask"
    module = "dask.array"
    layouts = LAYOUTS + EXTRA_LAYOUTS
    imports = "import numpy as np, dask.array"
    matrix_size = 1 << 18

    def misaligned(self, values: np.ndarray) -> Array:
        import dask.array as da

        chunks = tuple(max(1, (n + 1) // 2) for n in values.shape)
        return da.from_array(NUMPY.misaligned(values), chunks=chunks)

    def swapped(self, values: np.ndarray) -> Array:
        return self.from_numpy(NUMPY.swapped(values))

    def from_numpy(self, array: np.ndarray) -> Array:
        import dask.array as da

        array = np.array(array, order="C", copy=True)
        # About two chunks along every axis, so that every reduction crosses chunks.
        chunks = tuple(max(1, (n + 1) // 2) for n in array.shape)
        return da.from_array(array, chunks=chunks)

    def to_numpy(self, array: Array) -> np.ndarray:
        return np.array(array.compute(scheduler="threads"), copy=True)

    def array_type(self) -> type:
        import dask.array as da

        return da.Array

    def device(self, array: Array) -> Any:
        return "cpu"

    def permute(self, array: Array, axes: tuple[int, ...]) -> Array:
        return array.transpose(axes)

    def repro(self, expression: str) -> str:
        return f"dask.array.from_array({expression}, chunks=2)"


NUMPY = _NumPy()
ARRAY_API_STRICT = _ArrayAPIStrict()
TORCH = _Torch()
JAX = _Jax()


class _Native:
    """Fewer examples for a framework entry that hands its arrays to the NumPy kernels.

    Its numerics are numba-cpu's, checked by that backend's own suite; here the suite
    checks the hand-over (layouts, dtypes, results back) and the library's autodiff,
    which a few cases per property do, while every new case may cost a numba compilation.
    """

    example_factor = 1 / 6  # two examples per property and dtype in the ci profile


class _TorchNative(_Native, _Torch):
    pass


class _JaxNative(_Native, _Jax):
    pass


#: The adapters of the "torch" and "jax" entries: torch's and JAX's, with fewer examples.
TORCH_NATIVE = _TorchNative()
JAX_NATIVE = _JaxNative()
NUMBA_CUDA = _NumbaCUDA()
CUPY = _CuPy()
DASK = _Dask()


#: The adapters that feed each built-in backend; a plugin names its own in
#: ``BackendSpec.test_adapters``.
BUILTIN_ADAPTERS: dict[str, tuple[ArrayAdapter, ...]] = {
    "numba-cpu": (NUMPY,),
    "numba-cuda": (NUMBA_CUDA,),
    "cupy": (CUPY,),
    "dask": (DASK,),
    "torch": (TORCH_NATIVE,),
    "jax": (JAX_NATIVE,),
    "array-api": (NUMPY, ARRAY_API_STRICT, TORCH, JAX),
}


def build(adapter: ArrayAdapter, values: np.ndarray, layout: tuple[Any, ...]) -> Array:
    """Build ``values`` in ``adapter``'s library with the memory ``layout``.

    Parameters
    ----------
    adapter : ArrayAdapter
        The library's adapter.
    values : numpy.ndarray
        The logical values the result must hold.
    layout : tuple
        ``("C",)``, ``("F",)``, ``("transposed", axes)``, ``("negative",)``,
        ``("step", axis)`` or ``("broadcast", small_shape)``; for a broadcast layout
        ``values`` must be constant along the axes where ``small_shape`` is 1.

    Returns
    -------
    array
        An array of the library equal to ``values``, built as a view where the
        layout asks for one.
    """
    kind = layout[0]
    if kind == "C" or values.ndim == 0:
        return adapter.from_numpy(values)
    if kind == "F":
        axes = tuple(reversed(range(values.ndim)))
        return adapter.permute(adapter.from_numpy(values.transpose(axes)), axes)
    if kind == "transposed":
        axes = layout[1]
        inverse = tuple(int(i) for i in np.argsort(axes))
        return adapter.permute(adapter.from_numpy(values.transpose(inverse)), axes)
    if kind == "negative":
        flipped = values[(slice(None, None, -1),) * values.ndim]
        return adapter.flip(adapter.from_numpy(flipped))
    if kind == "step":
        axis = layout[1]
        shape = list(values.shape)
        shape[axis] *= 2
        # The skipped elements hold a value no correct backend could confuse with data.
        padded = np.full(shape, 7, dtype=values.dtype)
        index = [slice(None)] * values.ndim
        index[axis] = slice(None, None, 2)
        padded[tuple(index)] = values
        return adapter.step(adapter.from_numpy(padded), axis, 2)
    if kind == "misaligned":
        return adapter.misaligned(values)
    if kind == "swapped":
        return adapter.swapped(values)
    if kind == "broadcast":
        small_shape = layout[1]
        small = values[tuple(slice(0, n) for n in small_shape)]
        return adapter.broadcast_to(adapter.from_numpy(small), values.shape)
    raise ValueError(f"unknown layout {layout!r}; known layouts are {', '.join(LAYOUTS)}")

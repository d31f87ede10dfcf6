"""The spec as code: promotion, shapes, axes, reductions and their errors."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

from l1backends.semantics import (
    INTEGER_DTYPES,
    SUPPORTED_DTYPES,
    broadcast_shapes,
    dtype_name,
    legacy_reduction,
    make_plan,
    normalize_axis,
    promote_dtypes,
    real_dtype,
)

FLOATS = ("float16", "float32", "float64")


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("float32", "float64", "float64"),
        ("float16", "float32", "float32"),
        ("float16", "float16", "float16"),
        ("int32", "float16", "float16"),
        ("uint8", "float32", "float32"),
        ("int64", "int8", "float64"),
        ("uint64", "int64", "float64"),
        ("complex64", "float64", "complex128"),
        ("complex64", "float16", "complex64"),
        ("int16", "complex64", "complex64"),
        ("complex128", "complex64", "complex128"),
    ],
)
def test_promotion_table(a: str, b: str, expected: str) -> None:
    assert promote_dtypes(a, b) == expected
    assert promote_dtypes(b, a) == expected


def test_promotion_matches_numpy_for_floating_pairs() -> None:
    for a, b in itertools.product(SUPPORTED_DTYPES, repeat=2):
        assert promote_dtypes(a, b) == np.result_type(a, b).name, (a, b)


def test_integer_pairs_promote_to_float64() -> None:
    for a, b in itertools.product(INTEGER_DTYPES, repeat=2):
        assert promote_dtypes(a, b) == "float64"


@pytest.mark.parametrize("bad", ["bool", "object", "str", "<U3", "bfloat16", "datetime64"])
def test_unsupported_dtypes_raise_type_error_naming_them(bad: str) -> None:
    with pytest.raises(TypeError, match=f"dtype {bad}"):
        promote_dtypes(bad, "float32")
    with pytest.raises(TypeError, match=f"dtype {bad}"):
        promote_dtypes("float32", bad)


def test_real_dtype_of_complex() -> None:
    assert real_dtype("complex64") == "float32"
    assert real_dtype("complex128") == "float64"
    assert real_dtype("float16") == "float16"


def test_dtype_name_across_libraries() -> None:
    assert dtype_name(np.dtype("float32")) == "float32"

    class TorchLikeDtype:
        def __str__(self) -> str:
            return "torch.complex64"

    assert dtype_name(TorchLikeDtype()) == "complex64"


def test_broadcast_shapes() -> None:
    assert broadcast_shapes((3, 1), (3,)) == (3, 3)
    assert broadcast_shapes((), (2, 4)) == (2, 4)
    assert broadcast_shapes((0, 1), (1, 5)) == (0, 5)
    with pytest.raises(ValueError, match=r"\(2,\), \(3,\)"):
        broadcast_shapes((2,), (3,))


def test_normalize_axis() -> None:
    assert normalize_axis(None, 3) == (0, 1, 2)
    assert normalize_axis(-1, 3) == (2,)
    assert normalize_axis((2, -3), 3) == (0, 2)
    assert normalize_axis(np.int64(1), 2) == (1,)
    with pytest.raises(ValueError, match="axis 3 is out of range"):
        normalize_axis(3, 3)
    with pytest.raises(ValueError, match="axis -4 is out of range"):
        normalize_axis(-4, 3)
    with pytest.raises(ValueError, match="0-d"):
        normalize_axis(0, 0)
    with pytest.raises(ValueError, match="repeats"):
        normalize_axis((1, -2), 3)
    with pytest.raises(TypeError, match="axis must be an int"):
        normalize_axis(1.0, 3)
    with pytest.raises(TypeError, match="axis must be an int"):
        normalize_axis(True, 3)


def test_plan_for_mean_over_all_axes() -> None:
    plan = make_plan((4, 5), "float32", (4, 5), "int64")
    assert plan.reduction == "mean"
    assert plan.shape == (4, 5)
    assert plan.reduced_axes == (0, 1)
    assert plan.out_shape == ()
    assert plan.count == 20
    assert plan.compute_dtype == "float32"
    assert plan.result_dtype == "float32"
    assert plan.accumulate_dtype == "float64"
    assert plan.keepdims_shape == (1, 1)
    assert not plan.weighted
    assert not plan.input_broadcast


def test_plan_with_axis_matches_sklearn_raw_values_layout() -> None:
    plan = make_plan((6, 3), "float64", (6, 3), "float64", "mean", axis=0)
    assert plan.out_shape == (3,)
    assert plan.count == 6
    assert plan.kept_axes == (1,)
    assert plan.keepdims_shape == (1, 3)


def test_plan_for_complex_is_real_valued() -> None:
    plan = make_plan((2,), "complex64", (2,), "complex64", "none")
    assert plan.is_complex
    assert plan.compute_dtype == "complex64"
    assert plan.result_dtype == "float32"
    assert plan.out_shape == (2,)
    assert plan.reduced_axes == ()


def test_shape_mismatch_names_both_shapes_and_broadcast() -> None:
    with pytest.raises(ValueError) as error:
        make_plan((5, 1), "float32", (5,), "float32")
    message = str(error.value)
    assert "(5, 1)" in message
    assert "(5,)" in message
    assert "broadcast=True" in message


def test_input_broadcast_axes_are_the_axes_its_gradient_sums() -> None:
    def axes(input_shape: tuple[int, ...], target_shape: tuple[int, ...]) -> tuple[int, ...]:
        plan = make_plan(input_shape, "float32", target_shape, "float32", broadcast=True)
        return plan.input_broadcast_axes

    assert axes((3, 1), (2, 3, 5)) == (0, 2)
    assert axes((2, 3), (2, 3)) == ()
    assert axes((), (4,)) == (0,)


def test_broadcast_true_broadcasts_silently() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plan = make_plan((5, 1), "float32", (5,), "float32", broadcast=True)
    assert plan.shape == (5, 5)
    assert plan.input_broadcast
    with pytest.raises(ValueError, match="cannot be broadcast"):
        make_plan((2,), "float32", (3,), "float32", broadcast=True)


@pytest.mark.parametrize("bad", ["avg", "MEAN", "", None, 1])
def test_bad_reduction_names_value_and_lists_valid(bad: object) -> None:
    with pytest.raises(ValueError) as error:
        make_plan((2,), "float32", (2,), "float32", bad)
    message = str(error.value)
    assert repr(bad) in message
    for valid in ("'none'", "'mean'", "'sum'"):
        assert valid in message


def test_axis_with_none_reduction_is_refused() -> None:
    with pytest.raises(ValueError, match="reduction='none'"):
        make_plan((2, 3), "float32", (2, 3), "float32", "none", axis=0)


def test_weight_rules() -> None:
    plan = make_plan((4, 3), "float32", (4, 3), "float32", "mean", (3,), "float64")
    assert plan.weighted
    assert plan.result_dtype == "float32"  # the weight does not change the result dtype
    plan = make_plan((4, 3), "float32", (4, 3), "float32", "sum", (4, 1), "int32")
    assert plan.weight_shape == (4, 1)
    with pytest.raises(TypeError, match="complex"):
        make_plan((3,), "float32", (3,), "float32", "mean", (3,), "complex64")
    with pytest.raises(TypeError, match="bool"):
        make_plan((3,), "float32", (3,), "float32", "mean", (3,), "bool")
    with pytest.raises(ValueError, match=r"weight shape \(2, 3\) does not broadcast"):
        make_plan((3,), "float32", (3,), "float32", "mean", (2, 3), "float32")
    with pytest.raises(ValueError, match=r"weight shape \(4,\)"):
        make_plan((3,), "float32", (3,), "float32", "mean", (4,), "float32")


def test_grad_output_shape_rules() -> None:
    assert make_plan((4, 3), "float32", (4, 3), "float32", "mean", grad_output_shape=()).count
    make_plan((4, 3), "float32", (4, 3), "float32", "sum", axis=1, grad_output_shape=(4,))
    make_plan((4, 3), "float32", (4, 3), "float32", "none", grad_output_shape=(4, 3))
    with pytest.raises(ValueError, match=r"grad_output has shape \(3,\).*\(4,\)"):
        make_plan((4, 3), "float32", (4, 3), "float32", "sum", axis=1, grad_output_shape=(3,))
    with pytest.raises(ValueError, match="grad_output has shape"):
        make_plan((4, 3), "float32", (4, 3), "float32", "none", grad_output_shape=(3,))
    with pytest.raises(TypeError, match="grad_output has dtype complex64"):
        make_plan(
            (3,),
            "float32",
            (3,),
            "float32",
            "sum",
            grad_output_shape=(),
            grad_output_dtype="complex64",
        )


def test_empty_and_zero_d_plans() -> None:
    plan = make_plan((0, 3), "float32", (0, 3), "float32", "mean")
    assert plan.count == 0
    assert plan.size == 0
    plan = make_plan((), "float64", (), "float64", "sum")
    assert plan.count == 1
    assert plan.out_shape == ()


@pytest.mark.parametrize(
    ("size_average", "reduce", "expected"),
    [
        (None, None, "mean"),
        (True, None, "mean"),
        (False, None, "sum"),
        (None, True, "mean"),
        (None, False, "none"),
        (False, True, "sum"),
        (True, False, "none"),
        (False, False, "none"),
    ],
)
def test_legacy_reduction_matches_torch(
    size_average: bool | None, reduce: bool | None, expected: str
) -> None:
    with pytest.warns(DeprecationWarning, match=f"reduction='{expected}'"):
        assert legacy_reduction(size_average, reduce) == expected

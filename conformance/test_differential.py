"""Re-exports :mod:`l1backends.conformance.test_differential`."""

from l1backends.conformance.test_differential import *

"""Re-exports the path matrix of :mod:`l1backends.conformance.test_paths`."""

from l1backends.conformance.test_paths import *

"""Re-exports :mod:`l1backends.conformance.test_out`."""

from l1backends.conformance.test_out import *

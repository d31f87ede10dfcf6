"""Re-exports the tests of :mod:`l1backends.conformance.test_errors`."""

from l1backends.conformance.test_errors import *

"""Re-exports the tests of :mod:`l1backends.conformance.test_special_cases`."""

from l1backends.conformance.test_special_cases import *

"""Re-exports the property tests of :mod:`l1backends.conformance.test_properties`."""

from l1backends.conformance.test_properties import *

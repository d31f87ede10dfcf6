"""Re-exports :mod:`l1backends.conformance.test_devices`."""

from l1backends.conformance.test_devices import *

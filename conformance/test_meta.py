"""Re-exports the meta-tests of :mod:`l1backends.conformance.test_meta`."""

from l1backends.conformance.test_meta import *

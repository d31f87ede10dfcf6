"""Runs the installed suite's plugin: ``pytest conformance --backend NAME`` from a checkout."""

from l1backends.conformance.plugin import *

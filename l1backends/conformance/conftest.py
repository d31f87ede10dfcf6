"""Registers the suite's pytest plugin when the installed package is collected directly."""

from l1backends.conformance.plugin import *  # noqa: F403

"""The backends' implementations, one module or subpackage each, loaded lazily by the registry.

The subpackage is private: the public list of backends is :func:`l1backends.backends`.
"""

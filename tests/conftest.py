"""Test configuration shared by the unit tests."""

from l1backends.conformance import use_cuda_simulator_without_driver

# Before anything imports numba.cuda: without a CUDA driver the numba-cuda tests run on
# numba's CPU simulator, with one the real device is tested.
use_cuda_simulator_without_driver()

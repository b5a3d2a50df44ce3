"""Reconstruction methods behind one interface, found by name in one table (`recon.registry`):
nearest, linear, cubic, register, fusion, diffae, dmcvr, lag."""

from cardiorecon.recon.config import FAST_LAG, ReconConfig
from cardiorecon.recon.pipeline import METHODS, Reconstruction, reconstruct, to_native, write_reconstruction
from cardiorecon.recon.registry import ReconMethod, Work, get_method, method_names, methods, register_method

__all__ = ["FAST_LAG", "METHODS", "ReconConfig", "ReconMethod", "Reconstruction", "Work", "get_method", "method_names",
           "methods", "reconstruct", "register_method", "to_native", "write_reconstruction"]

"""Reconstruction methods behind one interface: nearest, linear, cubic, diffae, lag, dmcvr."""

from cardiorecon.recon.pipeline import (FAST_LAG, METHODS, ReconConfig, Reconstruction, reconstruct, to_native,
                                        write_reconstruction)

__all__ = ["FAST_LAG", "METHODS", "ReconConfig", "Reconstruction", "reconstruct", "to_native", "write_reconstruction"]

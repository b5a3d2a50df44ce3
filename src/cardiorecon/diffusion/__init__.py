"""Noise schedule (plain data) and deterministic DDIM sampling / inversion."""

from cardiorecon.diffusion.ddim import ddim_invert, ddim_sample, ddim_step
from cardiorecon.diffusion.schedule import NoiseSchedule, slerp, spaced_timesteps

__all__ = ["NoiseSchedule", "ddim_invert", "ddim_sample", "ddim_step", "slerp", "spaced_timesteps"]

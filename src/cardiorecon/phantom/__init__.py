"""The synthetic 4D biventricular cine phantom: the built-in default data, with the truth known."""

from cardiorecon.phantom.acquire import (AcquisitionConfig, PhantomSubject, generate, generate_cohort,
                                         write_subject)
from cardiorecon.phantom.anatomy import Anatomy, SubjectParams, sample_params

__all__ = ["AcquisitionConfig", "Anatomy", "PhantomSubject", "SubjectParams", "generate", "generate_cohort",
           "sample_params", "write_subject"]

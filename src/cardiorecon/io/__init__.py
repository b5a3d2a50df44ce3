"""Reading and writing Volumes and Studies (NIfTI, DICOM, dataset layouts)."""

from cardiorecon.io.contours import add_sunnybrook_labels, read_guidepoints, read_slice_info
from cardiorecon.io.dicom import read_dicom_folder
from cardiorecon.io.layouts import read_study
from cardiorecon.io.nifti import atomic_write, read_nifti, write_nifti

__all__ = [
    "add_sunnybrook_labels",
    "atomic_write",
    "read_dicom_folder",
    "read_guidepoints",
    "read_nifti",
    "read_slice_info",
    "read_study",
    "write_nifti",
]

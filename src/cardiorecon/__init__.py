"""cardiorecon: dense cardiac volumes from sparse SAX cine MRI, guided by LAX views."""

from cardiorecon.errors import CardioReconError, ConfigMismatchError, InputError, OutputError
from cardiorecon.volume import LABELS, Study, Volume

__version__ = "0.1.0"
__all__ = [
    "CardioReconError",
    "ConfigMismatchError",
    "InputError",
    "LABELS",
    "OutputError",
    "Study",
    "Volume",
]

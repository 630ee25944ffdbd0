"""CTMRRegistration library: CT-MR registration on MRML nodes and SimpleITK images, no Qt needed."""

__version__ = "0.1.0"  # before the imports: the report module reads it

from .errors import Cancelled, CTMRError, InputError, NoOverlapError, RegistrationError
from .logic import RegistrationLogic
from .pipeline import RegistrationOptions, RegistrationResult, register_images
from .scene import MRMLContext, create_headless_context, default_context

__all__ = [
    "Cancelled",
    "CTMRError",
    "InputError",
    "MRMLContext",
    "NoOverlapError",
    "RegistrationError",
    "RegistrationLogic",
    "RegistrationOptions",
    "RegistrationResult",
    "create_headless_context",
    "default_context",
    "register_images",
]

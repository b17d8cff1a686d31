"""Public exception tree; see `memory.errors` for the drawing. Import errors from here."""

from memory.errors import *  # noqa: F401,F403
from memory.errors import __all__  # noqa: F401

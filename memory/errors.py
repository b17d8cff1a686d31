"""The exception tree, for code inside `memory/`: it lives in the root module `errors`."""

from errors import *  # noqa: F401,F403
from errors import __all__  # noqa: F401

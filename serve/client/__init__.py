"""`neural_memory`: the Python client of Neural Memory Cluster.

    from neural_memory import Client, AsyncClient
    with Client("http://127.0.0.1:8000", api_key="...") as nm:
        nm.create_memory("notes")
        nm.observe("notes", "Grokking is delayed generalization.")
        print(nm.infer("notes", "What is grokking?").response)

    client.py     Client / AsyncClient over httpx (retries, errors as our exception classes)
    _calls.py     the REST calls, described once, typed with the server's serve/schemas.py
    image.py      the memory image file format (.nmem), shared with the server
    registry.py   push / pull images to any OCI registry (oras)
    langgraph.py  NeuralMemoryStore, a LangGraph BaseStore (needs the `langgraph` extra)
    commands.py   `neural-memory export | import-image | push | pull`

The code lives in serve/client/ of the repository (its top level is fixed) and is installed
under this one name (pyproject.toml maps it). Importing it loads httpx and pydantic, never
Ray or torch.
"""

if __name__ != "neural_memory":
    raise ImportError(f"import this package as `neural_memory`, not `{__name__}` "
                      "(serve/client/ is installed under that name)")

from importlib.metadata import PackageNotFoundError, version

from errors import *  # noqa: F401,F403 - the exception tree, as neural_memory.MemoryNotFound etc.
from errors import __all__ as _errors
from neural_memory.client import AsyncClient, Client

try:
    __version__ = version("neural-memory-cluster")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["Client", "AsyncClient", "__version__", *_errors]

"""A binding module's C functions: each declared with its prototype, bound to its library on first use.

_llama.py, _ggml.py and _mtmd.py each keep one `Declarations`. tests/test_abi.py and
tests/test_abi_mtmd.py compile every prototype against the pinned headers (a prototype
that drifted fails to compile) and check that the ctypes types match the C ones.

Nothing is loaded at import: `helios-engine --help`, and everything else that never calls
llama.cpp, works without a build. The first use of any declared name binds them all as
plain globals of the declaring module, so later calls go through no indirection.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable


class Declarations:
    """name -> (restype, argtypes, C prototype as the header spells it), and the binding of them all."""

    def __init__(self, load: Callable[[], ctypes.CDLL]):
        """load: opens the library the functions are looked up in (called once, on first use)."""
        self.functions: dict[str, tuple[object, list, str]] = {}
        self._load = load
        self._lock = threading.Lock()

    def c(self, prototype: str, restype, *argtypes) -> None:
        """Declare the function `prototype` names, e.g. c("void llama_free(struct llama_context * ctx)", None, ptr)."""
        name = prototype.split("(")[0].split()[-1].lstrip("*")
        self.functions[name] = (restype, list(argtypes), prototype)

    def bind(self, namespace: dict) -> None:
        """Load the library; set each declared function, then `lib`, in namespace (a module's globals)."""
        with self._lock:
            if "lib" in namespace:
                return
            loaded = self._load()
            for name, (restype, argtypes, _) in self.functions.items():
                function = getattr(loaded, name)
                function.restype = restype
                function.argtypes = argtypes
                namespace[name] = function
            namespace["lib"] = loaded  # last: its presence means every function is bound

    def module_getattr(self, namespace: dict) -> Callable[[str], object]:
        """The declaring module's __getattr__ (PEP 562): called only for names it does not hold yet."""

        def __getattr__(name: str):
            if name == "lib" or name in self.functions:
                self.bind(namespace)
                return namespace[name]
            raise AttributeError(f"module {namespace['__name__']!r} has no attribute {name!r}")

        return __getattr__

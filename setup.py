"""pip's way in: `pip install .`, `pip install git+URL`, `pip wheel .` and the sdist build llama.cpp into the wheel.

The build is vendor/build.py's, the cached one `make build` makes: the pinned llama.cpp tree comes
from its sha256-checked sdist, CMAKE_ARGS is honoured, and the libraries land in helios_core/lib
inside the wheel, with ggml's CPU backend once per instruction-set level, so the wheel runs on any
machine of its architecture (helios_core/cpu_variant.py picks, by running it, the level each
machine runs). An editable install (`make install`) builds nothing here: `make build` does.
Everything else about the package is in pyproject.toml.
"""

import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

ROOT = Path(__file__).resolve().parent


class BuildWithLlamaCpp(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        into = Path(self.build_lib) / "helios_core" / "lib"
        subprocess.run([sys.executable, str(ROOT / "vendor" / "build.py"), "--into", str(into)], check=True)


class BinaryDistribution(Distribution):
    """The wheel carries shared libraries: tag it for this platform, not py3-none-any."""

    def has_ext_modules(self) -> bool:
        return True


setup(cmdclass={"build_py": BuildWithLlamaCpp}, distclass=BinaryDistribution)

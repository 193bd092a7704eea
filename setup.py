"""Dependencies of the observer distribution, computed at build time.

The observer (`poolscope`) depends on the in-app distribution (`poolscope-instrument`,
built from ./instrument). A clone or an unpacked sdist holds both, and `pip install .`
must work there without an index that has poolscope-instrument: so when ./instrument is
present the dependency is a direct reference to it. `make` sets POOLSCOPE_INSTRUMENT_REQ
to the plain name, because it installs ./instrument editable first and a direct
reference would replace that editable install with a copy.
"""

import os
from pathlib import Path

from setuptools import setup

VERSION = "0.1.0"
HERE = Path(__file__).resolve().parent
OBSERVER_DEPS = [
    "textual>=0.86,<7",
    "plotext>=5.3.2,<6",
    "psutil>=5.9",
    "prometheus-client>=0.20",
    "aiohttp>=3.9",
]


def instrument_requirement() -> str:
    explicit = os.environ.get("POOLSCOPE_INSTRUMENT_REQ")
    if explicit:
        return explicit
    local = HERE / "instrument"
    if (local / "pyproject.toml").is_file():
        return f"poolscope-instrument @ {local.as_uri()}"
    return f"poolscope-instrument=={VERSION}"


setup(install_requires=[instrument_requirement(), *OBSERVER_DEPS])

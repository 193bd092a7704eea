"""The optional C accelerator of the pools' hot path (``poolscope.instrument._accel``).

Everything else is in pyproject.toml. The extension is optional twice over: setuptools
skips it when there is no working C compiler (``optional=True``), and the package runs
on its pure-Python closures whenever the module is absent (see
``poolscope/instrument/accel.py``). ``POOLSCOPE_BUILD_ACCEL=0`` skips the build.
"""

import os
import platform

from setuptools import Extension, setup

ext_modules = []
if platform.python_implementation() == "CPython" and os.environ.get("POOLSCOPE_BUILD_ACCEL") != "0":
    ext_modules.append(
        Extension(
            "poolscope.instrument._accel",
            ["poolscope/instrument/_accel.c"],
            depends=["poolscope/instrument/_shortest.h"],
            optional=True,
        )
    )

setup(ext_modules=ext_modules)

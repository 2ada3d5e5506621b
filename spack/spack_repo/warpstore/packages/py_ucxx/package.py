# Copyright warpstore developers. SPDX-License-Identifier: MIT

from spack_repo.builtin.build_systems.python import PythonPackage

from spack.package import *


class PyUcxx(PythonPackage):
    """Python bindings for UCXX, the C++ interface to UCX (RAPIDS).

    Builtin has only ucx-py 0.16 (2020), whose API warpstore does not use.
    UCXX has no buildable source distribution: the ``ucxx-cu12`` sdist on PyPI
    is a wheel stub that downloads the wheel from pypi.nvidia.com at build time,
    and a source build from GitHub needs rapids-cmake, which downloads its own
    dependencies at configure time. Neither works in a Spack build, so this
    recipe only describes the package: declare the RAPIDS wheel (``pip install
    ucxx-cu12``, which bundles libucxx and UCX) or conda package as an external
    in packages.yaml, as builtin does for vendor software such as cray-mpich.
    """

    homepage = "https://github.com/rapidsai/ucxx"

    license("BSD-3-Clause")

    version("0.52.0")
    version("0.51.1")
    version("0.50.0")
    version("0.49.0")
    version("0.48.0")
    version("0.47.0")
    version("0.46.0")
    version("0.45.1")
    version("0.44.0")

    has_code = False  # nothing to fetch: see the docstring

    depends_on("python@3.10:", type=("build", "run"))
    depends_on("py-numpy@1.23:", type=("build", "run"))

    def install(self, spec, prefix):
        raise InstallError(
            self.spec.format(
                "{name} cannot be built from source by Spack: install RAPIDS' wheel "
                "(pip install ucxx-cu12) and declare it as an external in packages.yaml"
            )
        )

# Copyright warpstore developers. SPDX-License-Identifier: MIT

from spack_repo.builtin.build_systems.python import PythonPackage

from spack.package import *


class PyPylibsrtp(PythonPackage):
    """Python bindings (cffi) for libsrtp, the Secure Real-time Transport Protocol.

    Carried here for py-aiortc (warpstore's endpoints): builtin has no pylibsrtp.
    The sdist builds against a libsrtp 2 (this repository's ``libsrtp``).
    sdist and sha256 from PyPI.
    """

    homepage = "https://github.com/aiortc/pylibsrtp"
    pypi = "pylibsrtp/pylibsrtp-0.10.0.tar.gz"

    license("BSD-3-Clause")

    version("0.10.0", sha256="d8001912d7f51bd05b4ea3551747930631777fd37892cf3bfe0e541a742e699f")

    depends_on("c", type="build")

    depends_on("python@3.8:", type=("build", "run"))
    depends_on("py-setuptools", type="build")
    depends_on("py-wheel", type="build")
    depends_on("py-cffi@1:", type=("build", "run"))
    depends_on("libsrtp@2:")

# Copyright warpstore developers. SPDX-License-Identifier: MIT

from spack_repo.builtin.build_systems.python import PythonPackage

from spack.package import *


class PyAioice(PythonPackage):
    """Interactive Connectivity Establishment (RFC 5245) in Python's asyncio.

    Carried here for py-aiortc (warpstore's endpoints): builtin has no aioice.
    sdists and sha256 from PyPI.
    """

    homepage = "https://github.com/aiortc/aioice"
    pypi = "aioice/aioice-0.9.0.tar.gz"

    license("BSD-3-Clause")

    version("0.10.1", sha256="5c8e1422103448d171925c678fb39795e5fe13d79108bebb00aa75a899c2094a")
    version("0.9.0", sha256="fc2401b1c4b6e19372eaaeaa28fd1bd9cbf6b0e412e48625297c53b495eebd1e")

    depends_on("python@3.7:", type=("build", "run"))
    depends_on("python@3.9:", type=("build", "run"), when="@0.10:")
    depends_on("py-setuptools", type="build")

    depends_on("py-dnspython@2:", type=("build", "run"))
    depends_on("py-ifaddr@0.2:", type=("build", "run"))

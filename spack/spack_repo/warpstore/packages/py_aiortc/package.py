# Copyright warpstore developers. SPDX-License-Identifier: MIT

from spack_repo.builtin.build_systems.python import PythonPackage

from spack.package import *


class PyAiortc(PythonPackage):
    """WebRTC and ORTC in Python's asyncio (warpstore's endpoints use its data channels).

    Carried here because builtin has no aiortc. 1.9.0 is within warpstore's range
    (aiortc>=1.5) and its dependencies are met by builtin plus what this
    repository adds (aioice, ifaddr, pylibsrtp, libsrtp, and PyAV 12 on builtin's
    FFmpeg 6); newer releases can be added with ``spack checksum py-aiortc``.
    sdist and sha256 from PyPI.
    """

    homepage = "https://github.com/aiortc/aiortc"
    pypi = "aiortc/aiortc-1.9.0.tar.gz"

    license("BSD-3-Clause")

    version("1.9.0", sha256="03faa76d76ef0e5989ac10386898b029369756102217230e2fcd4b029c50b303")

    depends_on("c", type="build")

    depends_on("python@3.8:", type=("build", "run"))
    depends_on("py-setuptools", type="build")
    depends_on("py-wheel", type="build")
    depends_on("py-cffi@1:", type=("build", "run"))

    depends_on("py-aioice@0.9:0", type=("build", "run"))
    depends_on("py-av@9:12", type=("build", "run"))
    depends_on("py-cryptography@42:", type=("build", "run"))
    depends_on("py-google-crc32c@1.1:", type=("build", "run"))
    depends_on("py-pyee@9:", type=("build", "run"))
    depends_on("py-pylibsrtp@0.10:", type=("build", "run"))
    depends_on("py-pyopenssl@24:", type=("build", "run"))

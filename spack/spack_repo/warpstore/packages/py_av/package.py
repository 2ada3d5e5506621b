# Copyright warpstore developers. SPDX-License-Identifier: MIT

from spack_repo.builtin.build_systems.python import PythonPackage

from spack.package import *


class PyAv(PythonPackage):
    """PyAV: Pythonic bindings for FFmpeg's libraries.

    Carried here for py-aiortc (warpstore's endpoints), which imports it even
    when only data channels are used: builtin has no PyAV. Version 12 is the
    newest that aiortc 1.9 accepts (av<13); it builds against FFmpeg 6.
    sdist and sha256 from PyPI.
    """

    homepage = "https://pyav.org"
    pypi = "av/av-12.3.0.tar.gz"

    license("BSD-3-Clause")

    version("12.3.0", sha256="04b1892562aff3277efc79f32bd8f1d0cbb64ed011241cb3e96f9ad471816c22")

    depends_on("c", type="build")

    depends_on("python@3.8:", type=("build", "run"))
    depends_on("py-setuptools", type="build")
    depends_on("py-cython@3:", type="build")
    depends_on("pkgconfig", type="build")
    depends_on("ffmpeg@6")

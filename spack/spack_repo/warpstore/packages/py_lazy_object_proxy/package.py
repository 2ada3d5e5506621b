# Copyright warpstore developers. SPDX-License-Identifier: MIT

from spack_repo.builtin.build_systems.python import PythonPackage

from spack.package import *


class PyLazyObjectProxy(PythonPackage):
    """A fast and thorough lazy object proxy.

    Carried here because builtin (spack-packages 1e8cf05) stops at 1.7.1 and
    warpstore requires 1.10+ (pyproject.toml; the versions its tests run with).
    Supporting 1.7.1 instead would mean testing warpstore's proxies against a
    2021 release in CI as well; carrying the recipe costs three version lines.
    This repository is searched before builtin, so this recipe replaces
    builtin's: it keeps builtin's versions and adds the newer ones (sdists and
    sha256 from PyPI).
    """

    homepage = "https://github.com/ionelmc/python-lazy-object-proxy"
    pypi = "lazy-object-proxy/lazy-object-proxy-1.3.1.tar.gz"

    license("BSD-2-Clause")

    version("1.12.0", sha256="1f5a462d92fd0cfb82f1fab28b51bfb209fabbe6aabf7f0d51472c0c124c0c61")
    version("1.11.0", sha256="18874411864c9fbbbaa47f9fc1dd7aea754c86cfde21278ef427639d1dd78e9c")
    version("1.10.0", sha256="78247b6d45f43a52ef35c25b5581459e85117225408a4128a3daf8bf9648ac69")
    version("1.7.1", sha256="d609c75b986def706743cdebe5e47553f4a5a1da9c5ff66d76013ef396b5a8a4")
    version("1.7.0", sha256="2185392631e9d1733749d06ee5210438908d46cc04666a0eba5679d885754894")
    version("1.6.0", sha256="489000d368377571c6f982fba6497f2aa13c6d1facc40660963da62f5c379726")

    depends_on("c", type="build")

    depends_on("python@3.6:", type=("build", "run"))
    depends_on("python@3.8:", type=("build", "run"), when="@1.10:")
    depends_on("python@3.9:", type=("build", "run"), when="@1.11:")

    depends_on("py-setuptools", type="build")
    depends_on("py-setuptools@30.3.0:", type="build", when="@1.6.0:")
    depends_on("py-setuptools@64:", type="build", when="@1.10:")
    depends_on("py-setuptools@80:", type="build", when="@1.12:")
    depends_on("py-setuptools-scm@3.3.1:", type="build")
    depends_on("py-setuptools-scm@3.3.1:5", type="build", when="@1.6.0:1.6")
    depends_on("py-setuptools-scm@8:", type="build", when="@1.10:")

    def url_for_version(self, version):
        # lazy-object-proxy-1.10.0.tar.gz became lazy_object_proxy-1.11.0.tar.gz
        url = super().url_for_version(version)
        if version >= Version("1.11"):
            return url.replace("lazy-object-proxy-", "lazy_object_proxy-")
        return url

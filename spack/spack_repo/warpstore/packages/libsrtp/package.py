# Copyright warpstore developers. SPDX-License-Identifier: MIT

from spack_repo.builtin.build_systems.cmake import CMakePackage

from spack.package import *


class Libsrtp(CMakePackage):
    """libsrtp: an implementation of the Secure Real-time Transport Protocol (SRTP).

    Carried here for py-pylibsrtp (aiortc, warpstore's endpoints): builtin has
    no libsrtp. The checksum is that of the GitHub tag archive (refs/tags/v2.6.0);
    it was not computed here (no access to GitHub) but agrees with the one
    independent packagers pin for the same archive (chimera-linux/cports
    main/libsrtp/template.py, Homebrew's srtp formula at 2.6.0, Fedora-style and
    Arch-style recipes). Re-check with ``spack checksum libsrtp 2.6.0`` on a
    machine that reaches GitHub.
    """

    homepage = "https://github.com/cisco/libsrtp"
    url = "https://github.com/cisco/libsrtp/archive/refs/tags/v2.6.0.tar.gz"

    license("BSD-3-Clause")

    version("2.6.0", sha256="bf641aa654861be10570bfc137d1441283822418e9757dc71ebb69a6cf84ea6b")

    depends_on("c", type="build")
    depends_on("openssl")

    def cmake_args(self):
        return [
            self.define("BUILD_SHARED_LIBS", True),
            self.define("ENABLE_OPENSSL", True),
            self.define("LIBSRTP_TEST_APPS", False),
        ]

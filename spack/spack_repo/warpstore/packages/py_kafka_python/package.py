# Copyright warpstore developers. SPDX-License-Identifier: MIT

from spack_repo.builtin.build_systems.python import PythonPackage

from spack.package import *


class PyKafkaPython(PythonPackage):
    """Pure Python client for Apache Kafka.

    Carried here for warpstore's +kafka variant (streams through Kafka): builtin
    (spack-packages 1e8cf05) has no kafka-python. 2.0.2 is the release the
    ``kafka-python>=2.0`` floor names; 3.0 is the one that runs on Python 3.12+
    (2.0.2's vendored six breaks there). sdists and sha256 from PyPI.
    """

    homepage = "https://github.com/dpkp/kafka-python"
    pypi = "kafka-python/kafka-python-2.0.2.tar.gz"

    license("Apache-2.0")

    version("3.0.12", sha256="4ccda3616b9aa5c353d74a97f2770d6cd1b950890d77ab0e8890e09a48eeed65")
    version("2.0.2", sha256="04dfe7fea2b63726cd6f3e79a2d86e709d608d74406638c5da33a01d45a9d7e3")

    depends_on("python@3.8:", type=("build", "run"), when="@3:")
    depends_on("python@:3.11", type=("build", "run"), when="@:2")

    depends_on("py-setuptools", type="build")
    depends_on("py-setuptools@77:", type="build", when="@3:")

    def url_for_version(self, version):
        # kafka-python-2.0.2.tar.gz became kafka_python-3.0.12.tar.gz
        url = super().url_for_version(version)
        if version >= Version("3"):
            return url.replace("kafka-python-", "kafka_python-")
        return url

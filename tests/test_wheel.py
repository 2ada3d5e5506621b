"""A pip-installed warpstore (a wheel, not this checkout) can render job scripts."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(300)
def test_wheel_ships_templates_and_site_configs(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
        check=True, capture_output=True, timeout=280,
    )
    (wheel,) = tmp_path.glob("warpstore-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for site in ("polaris", "aurora", "perlmutter", "frontier", "generic-pbs",
                 "generic-slurm", "local"):
        assert f"warpstore/_data/site-configs/{site}.yaml" in names
    for template in ("pbs/job.pbs.j2", "slurm/job.sh.j2", "macros.j2", "body.j2"):
        assert f"warpstore/_data/templates/{template}" in names
    # import the unpacked wheel, far from the checkout, and render from it
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import warpstore.hpc.data as d, sys\n"
        "assert str(d.data_dir('templates')).startswith(sys.argv[1]), d.data_dir('templates')\n"
        "from warpstore.cli import cli\n"
        "cli(['render', '--site', 'polaris', '-A', 'P', '--nodes', '2', '--', 'python', 'x.py'])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run(
        [sys.executable, "-c", code, str(site)], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "#PBS -l select=2:system=polaris" in proc.stdout

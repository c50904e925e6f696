"""A normal (non-editable) install: one `mimic` namespace plus `mimic_ros`, usable from outside the checkout.

The wheel is built from the checkout and installed with pip into a fresh target folder; the installed
code then runs from a directory with no checkout on its path, so nothing can come from the source tree.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("install")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "wheel"), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = (tmp / "wheel").glob("mimic-*.whl")
    site = tmp / "site"
    inst = subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp,
    )
    assert inst.returncode == 0, inst.stderr[-2000:]
    return site


def _run(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=120, env=env, cwd=site.parent
    )


def test_only_the_namespace_lands_in_site_packages(installed):
    tops = sorted(p.name for p in installed.iterdir() if p.name != "bin")
    assert [t for t in tops if not t.endswith(".dist-info")] == ["mimic", "mimic_ros"]
    assert [t.split("-")[0] for t in tops if t.endswith(".dist-info")] == ["mimic"]


def test_installed_packages_import_and_find_their_data(installed):
    code = (
        "import mimic.policies, mimic.data, mimic.robots, mimic.sim, mimic.teleop, mimic.calibration, "
        "mimic.workflows, mimic_ros\n"
        "from pathlib import Path\n"
        "from mimic.demo import default_train_config\n"
        "from mimic_ros.session import config_dir\n"
        "for m in (mimic.policies, mimic.robots, mimic_ros):\n"
        "    print(Path(m.__file__).resolve())\n"
        "print(Path(default_train_config('reach')).is_file(), sorted(p.name for p in config_dir().glob('*.yaml')))\n"
    )
    r = _run(installed, "-c", code)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    assert all(line.startswith(str(installed.resolve())) for line in lines[:3]), lines
    assert lines[3].startswith("True") and "teleop_twin.yaml" in lines[3]


def test_the_mimic_command_runs_from_the_install(installed):
    r = _run(installed, "-m", "mimic.cli", "--help")
    assert r.returncode == 0, r.stderr[-2000:]
    for verb in ("session", "dataset", "record", "dagger", "train", "eval", "deploy", "calibrate", "demo"):
        assert f"  {verb} " in r.stdout

"""What `pip install .` installs: every module, the type marker, the licence and `lvm`.

The wheel is built offline from a copy of the sources (a stale ``build/`` folder in the checkout
cannot leak into it) and installed with ``--target`` into an empty folder. The installed code
then runs in an isolated interpreter (``-I -S``) whose path is that folder, the standard
library and this environment's site-packages read without their ``.pth`` files, so neither the
repository nor the editable install of the checkout can stand in for a missing file.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from email import message_from_bytes
from email.message import Message
from pathlib import Path

import pytest

from inference.studies.registry import GUIDES, MODELS

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lvm_models", "guides", "inference")

# Run by the isolated interpreter before anything else: the installed folder first, then the
# dependencies' site-packages, no current directory and no editable finder.
_ISOLATED_PATH = """
import sys
target, *site_dirs = sys.argv[1].split("|")
sys.path[:] = [target, *sys.path, *site_dirs]
del sys.argv[1]
"""

# Imports every module and every name in the packages' __all__ (the lazy ones load their module),
# then prints where each module came from.
_IMPORT_EVERY_NAME = """
import importlib, json, pkgutil

for package in {packages!r}:
    module = importlib.import_module(package)
    for info in pkgutil.walk_packages(module.__path__, package + "."):
        if not info.name.endswith(".__main__"):  # `python -m` entry points run when imported
            importlib.import_module(info.name)
    for name in module.__all__:
        getattr(module, name)
print(json.dumps({{
    name: module.__file__
    for name, module in sys.modules.items()
    if name.split(".")[0] in {packages!r}
}}))
"""


def _source_modules(*, with_main: bool = True) -> set[str]:
    """The dotted name of every module of the packages in the checkout; ``with_main=False``
    leaves out the ``__main__`` modules, which ``python -m`` runs and importing would run."""
    names = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__main__" and not with_main:
                continue
            names.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _search_path(target: Path) -> str:
    """The installed folder, then this environment's site-packages, joined by ``|``."""
    paths = sysconfig.get_paths()
    return "|".join(dict.fromkeys([str(target), paths["purelib"], paths["platlib"]]))


def _run_isolated(target: Path, code: str, *args: str, cwd: Path) -> str:
    """Run ``code`` in a fresh interpreter that sees ``target`` and the dependencies only."""
    command = [sys.executable, "-I", "-S", "-c", _ISOLATED_PATH + code, _search_path(target)]
    result = subprocess.run([*command, *args], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The wheel and the build's output (pip's ``-v`` shows the backend's warnings)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    out = tmp_path_factory.mktemp("wheelhouse")
    command = [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation"]
    result = subprocess.run(
        [*command, "--no-index", "--wheel-dir", str(out), str(source)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = out.glob("lvm_suite-*.whl")
    return wheel, result.stdout + result.stderr


@pytest.fixture(scope="module")
def installed(built: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder that ``pip install --target`` filled from the wheel."""
    target = tmp_path_factory.mktemp("installed")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet"]
        + ["--target", str(target), str(built[0])],
        check=True,
        capture_output=True,
    )
    return target


def _wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def _metadata(wheel: Path) -> Message:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return message_from_bytes(archive.read(name))


def test_wheel_holds_every_module_of_every_subpackage(built: tuple[Path, str]) -> None:
    shipped = {
        name.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        for name in _wheel_names(built[0])
        if name.endswith(".py")
    }
    assert shipped == _source_modules()


def test_wheel_marks_every_package_as_typed(built: tuple[Path, str]) -> None:
    names = _wheel_names(built[0])
    assert {f"{package}/py.typed" for package in PACKAGES} <= names


def test_wheel_declares_the_licence_by_spdx_and_ships_its_text(built: tuple[Path, str]) -> None:
    wheel = built[0]
    metadata = _metadata(wheel)
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata.get_all("License-File") == ["LICENSE"]
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
        assert archive.read(name) == (ROOT / "LICENSE").read_bytes()
    assert "Apache License" in (ROOT / "LICENSE").read_text()


def test_build_gives_no_warning(built: tuple[Path, str]) -> None:
    # Python's warning lines, "path:line: Category: message" (pip names the backend's
    # BuildBackendWarning); the old licence table gave "`project.license` as a TOML table is
    # deprecated".
    warnings = re.findall(r"^.*:\d+: \w*Warning: .*$", built[1], flags=re.MULTILINE)
    assert warnings == []


def test_installed_package_imports_every_module_and_public_name(
    installed: Path, tmp_path: Path
) -> None:
    code = _IMPORT_EVERY_NAME.format(packages=PACKAGES)
    origins = json.loads(_run_isolated(installed, code, cwd=tmp_path))
    assert set(origins) == _source_modules(with_main=False)
    outside = {
        name: path for name, path in origins.items() if not Path(path).is_relative_to(installed)
    }
    assert outside == {}


def test_installed_lvm_entry_point_lists_the_built_in_pairs(
    installed: Path, tmp_path: Path
) -> None:
    script = installed / "bin" / "lvm"
    run_script = f"import runpy; runpy.run_path({str(script)!r}, run_name='__main__')"
    listing = _run_isolated(installed, run_script, "list", cwd=tmp_path)
    names = {line.split()[0] for line in listing.splitlines() if line.startswith("  ")}
    assert names >= set(MODELS) | set(GUIDES)

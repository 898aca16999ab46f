"""What a wheel and an sdist carry: the licence, the type marker, the data, one version."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import npgru
from npgru.cli import main

from .conftest import require

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """A wheel and an sdist built from this checkout (offline: no isolated build env)."""
    require("build")
    require("hatchling")
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--sdist", "--wheel",
                           "--outdir", str(out), str(ROOT)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    with zipfile.ZipFile(wheel) as z:
        wheel_names = z.namelist()
        metadata = next(z.read(n).decode() for n in wheel_names if n.endswith(".dist-info/METADATA"))
    with tarfile.open(sdist) as t:
        sdist_names = [n.split("/", 1)[1] for n in t.getnames() if "/" in n]
    return wheel.name, wheel_names, metadata, sdist_names


def test_wheel_carries_licence_type_marker_and_data(dists):
    name, names, _, _ = dists
    assert name.startswith(f"npgru-{npgru.__version__}-")
    assert any(re.search(r"\.dist-info/licenses/LICENSE$", n) for n in names), names
    assert "npgru/py.typed" in names
    assert "npgru/datasets/data/shakespeare.json.gz" in names
    assert not any(n.startswith(("tests/", "docs/", "benchmarks/")) for n in names)


def test_sdist_carries_licence_docs_and_tests(dists):
    names = set(dists[3])
    for path in ("LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml", "mkdocs.yml",
                 "npgru/py.typed", "tests/test_packaging.py", "docs/index.md"):
        assert path in names, path


def test_metadata_names_version_licence_urls_and_lean_extras(dists):
    metadata = dists[2]
    assert f"Version: {npgru.__version__}\n" in metadata
    assert "License-Expression: MIT" in metadata
    assert "Project-URL: Documentation, " in metadata
    for minor in (10, 11, 12, 13):
        assert f"Programming Language :: Python :: 3.{minor}" in metadata
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    core = [r for r in requires if "extra ==" not in r]
    # the default install stays lean: numba and matplotlib are extras, torch a range
    assert not any(pkg in r for r in core for pkg in ("numba", "matplotlib", "torch")), core
    assert any(r.startswith("Requires-Dist: numba") and "extra == 'fast'" in r for r in requires)
    assert any(r.startswith("Requires-Dist: matplotlib") and "extra == 'plots'" in r
               for r in requires)
    assert any(r.startswith("Requires-Dist: torch>=") and "extra == 'torch'" in r for r in requires)


def test_version_flag_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"npgru {npgru.__version__}"


def test_version_has_one_source():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in text and not re.search(r'^version\s*=', text, re.M)
    assert re.search(rf'^__version__ = "{re.escape(npgru.__version__)}"$',
                     (ROOT / "npgru" / "__init__.py").read_text(), re.M)


def test_citation_names_the_package_version():
    text = (ROOT / "CITATION.cff").read_text()
    assert re.search(rf"^version: {re.escape(npgru.__version__)}$", text, re.M)


def test_nothing_points_outside_the_repository():
    """Docstrings, docs, notebooks and the README cite the repository's own docs only (tests
    may name these strings: tests/test_notebooks.py forbids them in the notebooks)."""
    outside = ("DESIGN" + " §", "REFERENCES" + ".md", "REFERENCES" + " \"", "../" + "shared")
    roots = [ROOT / "npgru", ROOT / "docs", ROOT / "notebooks", ROOT / "benchmarks"]
    files = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "CHANGELOG.md"]
    files += [p for r in roots for p in r.rglob("*")
              if p.suffix in (".py", ".md", ".ipynb") and p.is_file()]
    found = [f"{p.relative_to(ROOT)}: {s}" for p in files for s in outside if s in p.read_text()]
    assert not found, found


def test_readme_links_work_on_pypi():
    """PyPI shows the README without the repository: every link is absolute or an anchor."""
    links = re.findall(r"\]\(([^)\s]+)\)", (ROOT / "README.md").read_text())
    relative = [url for url in links if not url.startswith(("https://", "#"))]
    assert links and not relative, relative

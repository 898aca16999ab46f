"""Installed size of npgru's dependencies, per extra: what `pip install npgru[...]` costs.

Each row is a fresh virtual environment (in a temporary folder) into which pip installs the
packages of that row; the size is the growth of its site-packages over an empty venv's. Needs
network access to the package index (or a warm pip cache). Run:

    python benchmarks/install_sizes.py            # prints a Markdown table
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import venv

ROWS = {
    "numpy alone": ["numpy>=1.24"],
    "npgru (default: numpy, tqdm, threadpoolctl)": ["numpy>=1.24", "tqdm>=4.60", "threadpoolctl>=3"],
    "tqdm": ["tqdm>=4.60"],
    "threadpoolctl": ["threadpoolctl>=3"],
    "[fast]: numba": ["numba>=0.59"],
    "[plots]: matplotlib": ["matplotlib>=3.7"],
}


def site_packages_bytes(env: str) -> int:
    out = subprocess.run([os.path.join(env, "bin", "python"), "-c",
                          "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True).stdout.strip()
    total = 0
    for root, _, files in os.walk(out):
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                total += os.path.getsize(path)
    return total


def installed(packages: list[str], where: str) -> int:
    venv.create(where, with_pip=True)
    subprocess.run([os.path.join(where, "bin", "python"), "-m", "pip", "install", "--quiet",
                    "--disable-pip-version-check", *packages], check=True)
    return site_packages_bytes(where)


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        empty = os.path.join(tmp, "empty")
        venv.create(empty, with_pip=True)
        base = site_packages_bytes(empty)
        numpy_only = None
        print(f"Python {sys.version.split()[0]}; MiB = 2^20 bytes of installed files\n")
        print("| install | packages | installed size | over NumPy alone |")
        print("|---|---|---|---|")
        for i, (name, packages) in enumerate(ROWS.items()):
            extra = packages if "numpy" in " ".join(packages) else ["numpy>=1.24", *packages]
            size = installed(extra, os.path.join(tmp, f"v{i}")) - base
            if name == "numpy alone":
                numpy_only = size
            over = "" if numpy_only is None else f"+{(size - numpy_only) / 2**20:.1f} MiB"
            print(f"| {name} | {' '.join(extra)} | {size / 2**20:.1f} MiB | {over} |", flush=True)


if __name__ == "__main__":
    main()

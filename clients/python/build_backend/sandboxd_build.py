"""sandboxd_build.py - a PEP 517 build backend that needs only the standard
library, so the client installs with `pip install --no-index` on a machine
without network (pip's isolated build environment cannot download
setuptools there).

It packs the `sandboxd` package directory into a pure-Python wheel (and an
sdist of this directory). Name, version, summary, Python requirement and
dependencies are read from pyproject.toml's [project] table; the README
becomes the long description."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import tarfile
import zipfile
from typing import Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "sandboxd"
SDIST_ITEMS = ("pyproject.toml", "README.md", "build_backend", PACKAGE, "tests")


def _project() -> Dict[str, object]:
    """The [project] table of pyproject.toml. tomllib is 3.11+; for older
    Pythons a reader for the flat string and list keys used here."""
    path = os.path.join(ROOT, "pyproject.toml")
    try:
        import tomllib  # type: ignore[import-not-found]

        with open(path, "rb") as f:
            return dict(tomllib.load(f)["project"])
    except ImportError:
        pass
    out: Dict[str, object] = {}
    section = None
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line.startswith("["):
                section = line.strip("[]")
                continue
            m = re.match(r'^([A-Za-z_-]+)\s*=\s*(.+)$', line)
            if section != "project" or not m:
                continue
            key, val = m.group(1), m.group(2)
            if val.startswith("["):
                out[key] = re.findall(r'"([^"]*)"', val)
            else:
                out[key] = val.strip('"')
    return out


def _names() -> Tuple[str, str, str]:
    p = _project()
    name = str(p["name"])
    version = str(p["version"])
    dist = re.sub(r"[-_.]+", "_", name)
    return name, version, dist


def _metadata() -> str:
    p = _project()
    name, version, _ = _names()
    lines = ["Metadata-Version: 2.1", "Name: %s" % name, "Version: %s" % version]
    if p.get("description"):
        lines.append("Summary: %s" % p["description"])
    if p.get("requires-python"):
        lines.append("Requires-Python: %s" % p["requires-python"])
    for dep in p.get("dependencies", []) or []:  # type: ignore[union-attr]
        lines.append("Requires-Dist: %s" % dep)
    readme = os.path.join(ROOT, "README.md")
    body = ""
    if os.path.exists(readme):
        lines.append("Description-Content-Type: text/markdown")
        with open(readme, encoding="utf-8") as f:
            body = f.read()
    return "\n".join(lines) + "\n\n" + body


def _wheel_name() -> str:
    _, version, dist = _names()
    return "%s-%s-py3-none-any.whl" % (dist, version)


def _package_files() -> List[str]:
    """Paths (relative to ROOT) of the package's files, sorted."""
    out = []
    for d, dirs, files in os.walk(os.path.join(ROOT, PACKAGE)):
        dirs[:] = sorted(x for x in dirs if x != "__pycache__")
        for fn in sorted(files):
            if fn.endswith((".pyc", ".pyo")):
                continue
            out.append(os.path.relpath(os.path.join(d, fn), ROOT))
    return out


def _record_line(arcname: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return "%s,sha256=%s,%d" % (arcname, digest, len(data))


def _dist_info_files() -> Dict[str, bytes]:
    _, version, dist = _names()
    di = "%s-%s.dist-info" % (dist, version)
    return {
        di + "/METADATA": _metadata().encode("utf-8"),
        di + "/WHEEL": b"Wheel-Version: 1.0\nGenerator: sandboxd_build\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        di + "/top_level.txt": (PACKAGE + "\n").encode(),
    }


def _write_wheel(wheel_directory: str, files: Dict[str, bytes]) -> str:
    _, version, dist = _names()
    record_name = "%s-%s.dist-info/RECORD" % (dist, version)
    name = _wheel_name()
    path = os.path.join(wheel_directory, name)
    records = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for arc, data in files.items():
            info = zipfile.ZipInfo(arc, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
            records.append(_record_line(arc, data))
        records.append(record_name + ",,")
        z.writestr(zipfile.ZipInfo(record_name, date_time=(1980, 1, 1, 0, 0, 0)), "\n".join(records) + "\n")
    return name


# --------------------------------------------------------------------------
# PEP 517 / PEP 660 hooks
# --------------------------------------------------------------------------


def get_requires_for_build_wheel(config_settings: Optional[dict] = None) -> List[str]:
    return []


def get_requires_for_build_sdist(config_settings: Optional[dict] = None) -> List[str]:
    return []


def get_requires_for_build_editable(config_settings: Optional[dict] = None) -> List[str]:
    return []


def prepare_metadata_for_build_wheel(metadata_directory: str, config_settings: Optional[dict] = None) -> str:
    _, version, dist = _names()
    di = "%s-%s.dist-info" % (dist, version)
    os.makedirs(os.path.join(metadata_directory, di), exist_ok=True)
    for arc, data in _dist_info_files().items():
        with open(os.path.join(metadata_directory, arc), "wb") as f:
            f.write(data)
    return di


def build_wheel(wheel_directory: str, config_settings: Optional[dict] = None,
                metadata_directory: Optional[str] = None) -> str:
    files: Dict[str, bytes] = {}
    for rel in _package_files():
        with open(os.path.join(ROOT, rel), "rb") as f:
            files[rel.replace(os.sep, "/")] = f.read()
    files.update(_dist_info_files())
    return _write_wheel(wheel_directory, files)


def build_editable(wheel_directory: str, config_settings: Optional[dict] = None,
                   metadata_directory: Optional[str] = None) -> str:
    """An editable install: a .pth file that puts this directory on sys.path."""
    _, _, dist = _names()
    files = {"__editable__.%s.pth" % dist: (ROOT + "\n").encode()}
    files.update(_dist_info_files())
    return _write_wheel(wheel_directory, files)


def prepare_metadata_for_build_editable(metadata_directory: str, config_settings: Optional[dict] = None) -> str:
    return prepare_metadata_for_build_wheel(metadata_directory, config_settings)


def build_sdist(sdist_directory: str, config_settings: Optional[dict] = None) -> str:
    _, version, dist = _names()
    base = "%s-%s" % (dist, version)
    name = base + ".tar.gz"
    with tarfile.open(os.path.join(sdist_directory, name), "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for item in SDIST_ITEMS:
            p = os.path.join(ROOT, item)
            if os.path.exists(p):
                tar.add(p, arcname=base + "/" + item,
                        filter=lambda ti: None if "__pycache__" in ti.name or ti.name.endswith(".pyc") else ti)
        pkg_info = _metadata().encode("utf-8")
        ti = tarfile.TarInfo(base + "/PKG-INFO")
        ti.size = len(pkg_info)
        ti.mode = 0o644
        tar.addfile(ti, io.BytesIO(pkg_info))
    return name

"""Packages of runtime environments: local folders zipped by the driver,
stored content-addressed in the gcs's key-value store, unpacked by each node.

A package's URI is ``gcs://_runtime_env_<sha256 prefix>.zip``: the same files
give the same URI, so a folder is stored (and unpacked on a node) once. The
zip is deterministic: sorted entries, fixed timestamps, file modes kept.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import os
import re
import shutil
import zipfile
from collections.abc import Iterable

#: The gcs key-value namespace packages are stored under.
KV_NAMESPACE = "runtime_env"
#: The most a package may weigh (zipped), as Ray's default limit for working_dir.
MAX_PACKAGE_BYTES = 100 * 1024 * 1024
_URI = re.compile(r"^gcs://_runtime_env_[0-9a-f]{32}\.(zip|whl)$")
#: Never packed: caches and version control.
_ALWAYS_EXCLUDED = ("__pycache__", ".git", "*.pyc")


def is_uri(value: str) -> bool:
    return bool(_URI.match(value))


def pack(path: str, excludes: Iterable[str] = (), *, keep_top: bool = False) -> tuple[str, bytes]:
    """``(uri, zip bytes)`` of a local folder (its files at the zip's root, or
    under the folder's own name with ``keep_top``: a package for py_modules),
    or of a .zip or .whl file as it is. ValueError naming the path if it cannot
    be read or is too large."""
    real = os.path.realpath(path)
    if os.path.isfile(real) and real.endswith((".zip", ".whl")):
        with open(real, "rb") as f:
            data = f.read()
        _check_size(path, len(data))
        return _uri(data, real.rsplit(".", 1)[1]), data
    if not os.path.isdir(real):
        raise ValueError(f"runtime_env: {path!r} is not a folder, a .zip or a .whl")
    patterns = [*_ALWAYS_EXCLUDED, *excludes]
    buffer = io.BytesIO()
    total = 0
    top = os.path.basename(real.rstrip(os.sep)) if keep_top else ""
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for root, dirs, files in os.walk(real):
            rel_root = os.path.relpath(root, real)
            dirs[:] = sorted(d for d in dirs if not _excluded(os.path.join(rel_root, d), patterns))
            for name in sorted(files):
                rel = os.path.normpath(os.path.join(rel_root, name))
                if _excluded(rel, patterns):
                    continue
                full = os.path.join(root, name)
                try:
                    info = os.stat(full)
                    with open(full, "rb") as f:
                        content = f.read()
                except OSError as e:
                    raise ValueError(f"runtime_env: cannot read {full!r}: {e}") from e
                total += len(content)
                _check_size(path, total)
                entry = zipfile.ZipInfo(os.path.join(top, rel), date_time=(1980, 1, 1, 0, 0, 0))
                entry.external_attr = (info.st_mode & 0o777) << 16
                entry.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(entry, content)
    data = buffer.getvalue()
    _check_size(path, len(data))
    return _uri(data, "zip"), data


def _excluded(rel: str, patterns: list[str]) -> bool:
    parts = rel.split(os.sep)
    return any(
        fnmatch.fnmatch(rel, p) or any(fnmatch.fnmatch(part, p) for part in parts) for p in patterns
    )


def _check_size(path: str, size: int) -> None:
    if size > MAX_PACKAGE_BYTES:
        raise ValueError(
            f"runtime_env: {path!r} is larger than the {MAX_PACKAGE_BYTES // (1024 * 1024)} MiB "
            "a package may be; leave big files out with 'excludes'"
        )


def _uri(data: bytes, kind: str) -> str:
    return f"gcs://_runtime_env_{hashlib.sha256(data).hexdigest()[:32]}.{kind}"


def matches(uri: str, data: bytes) -> bool:
    """Whether ``data`` is the package ``uri`` names (its URI is its content's hash)."""
    return is_uri(uri) and uri == _uri(data, uri.rsplit(".", 1)[1])


def unpack(uri: str, data: bytes, dest: str) -> None:
    """Unpacks a package into ``dest`` (made whole or not at all): a zip is
    extracted; a wheel, being a zip of importable files, too."""
    if not is_uri(uri):
        raise ValueError(f"not a package URI: {uri!r}")
    partial = f"{dest}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial, mode=0o700)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for member in archive.infolist():
                target = os.path.realpath(os.path.join(partial, member.filename))
                if not target.startswith(os.path.realpath(partial) + os.sep):
                    raise ValueError(f"package {uri} holds a path outside it: {member.filename}")
            archive.extractall(partial)
        try:
            os.replace(partial, dest)
        except OSError:
            if not os.path.isdir(dest):
                raise
            shutil.rmtree(partial, ignore_errors=True)  # another raylet of this machine won
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise

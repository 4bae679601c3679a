"""Download pinned prompt files and check them against their sha256.

Suites whose prompts come from a third party (T2I-CompBench) never commit the files: their
definition in ``benchmarks/suites/<name>.json`` lists each file's sha256 and size, and
:func:`fetch_files` downloads them with urllib, verifies each one *before* it takes its final
name (temporary file in the same directory, then ``os.replace``), and skips files that are
already present and correct. A partial or wrong download never sits under the final name.

:func:`fetch_suite` is the entry point of ``evalkit suites fetch NAME``.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import stat
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from evalkit.errors import PromptFileError, UnknownNameError

DEFAULT_TIMEOUT = 30.0  # seconds, per connection attempt and per read
_CHUNK = 1 << 16

#: suite families whose prompt files can be fetched: name -> "module:function"
FETCHABLE: dict[str, str] = {
    "t2i-compbench": "evalkit.suites.t2i_compbench_relations:fetch_t2i_compbench_all",  # attribute + relation files
}


@dataclass(frozen=True)
class FileSpec:
    """One pinned file: its name in the source folder, sha256 and size in bytes."""

    name: str
    sha256: str
    size: int


#: the most a prompt file may hold (the real ones are tens of kilobytes): a bigger file is not read
MAX_PROMPT_FILE_BYTES = 10 * 1024 * 1024


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def read_regular_file(path: str | os.PathLike, limit: int = MAX_PROMPT_FILE_BYTES) -> bytes:
    """The bytes of ``path``, which must be a regular file (after symlinks) of at most ``limit`` bytes.

    A device (``/dev/zero``), FIFO, socket or folder is refused without reading from it (opened
    non-blocking, checked on the open descriptor), and at most ``limit + 1`` bytes are ever read.
    Raises :class:`OSError` naming the path.
    """
    path = os.fspath(path)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, f"{_kind(info.st_mode)}, not a regular file: refused", path)
        if info.st_size > limit:
            raise OSError(errno.EFBIG, f"{info.st_size} bytes, more than the {limit} a prompt file may hold", path)
        chunks, n = [], 0
        while n <= limit:
            chunk = os.read(fd, min(_CHUNK, limit + 1 - n))
            if not chunk:
                break
            chunks.append(chunk)
            n += len(chunk)
        if n > limit:  # it grew while being read
            raise OSError(errno.EFBIG, f"more than the {limit} bytes a prompt file may hold", path)
        return b"".join(chunks)
    finally:
        os.close(fd)


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a regular file, read in chunks (a device or FIFO is refused, as by :func:`read_regular_file`)."""
    h = hashlib.sha256()
    fd = os.open(os.fspath(path), os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, f"{_kind(info.st_mode)}, not a regular file: refused", os.fspath(path))
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def file_matches(path: str | os.PathLike, spec: FileSpec) -> bool:
    """True when ``path`` is a regular file with the pinned size and sha256."""
    p = Path(path)
    try:
        return p.is_file() and p.stat().st_size == spec.size and sha256_file(p) == spec.sha256
    except OSError:
        return False


def file_url(base_url: str, name: str) -> str:
    return base_url.rstrip("/") + "/" + urllib.parse.quote(name)


def _default_opener(url: str, timeout: float):
    return urllib.request.urlopen(url, timeout=timeout)


# Errors that mean "could not get the bytes" (as opposed to a local disk problem).
_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError)


def _download_one(
    spec: FileSpec,
    url: str,
    dest: Path,
    *,
    timeout: float,
    opener: Callable[[str, float], Any],
    bar,
    offline_hint: str,
) -> None:
    final = dest / spec.name
    fd, tmp_name = tempfile.mkstemp(dir=dest, prefix=f".{spec.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        n = 0
        with os.fdopen(fd, "wb") as out:
            try:
                with opener(url, timeout) as resp:
                    while True:
                        chunk = resp.read(_CHUNK)
                        if not chunk:
                            break
                        n += len(chunk)
                        if n > spec.size:  # do not keep reading an unexpected (maybe huge) answer
                            raise PromptFileError(
                                f"download of {url} is larger than the pinned {spec.size} bytes; "
                                f"it is not the expected file. Nothing was written to {final}."
                            )
                        h.update(chunk)
                        out.write(chunk)
                        if bar is not None:
                            bar.update(len(chunk))
            except PromptFileError:
                raise
            except urllib.error.HTTPError as e:
                raise PromptFileError(
                    f"could not download {url}: the server answered HTTP {e.code} {e.reason}. {offline_hint}"
                ) from e
            except _NETWORK_ERRORS as e:
                reason = getattr(e, "reason", None) or e
                raise PromptFileError(
                    f"could not download {url}: {reason} (network unavailable?). {offline_hint}"
                ) from e
            except ValueError as e:  # malformed URL, unknown scheme
                raise PromptFileError(f"could not download {url}: {e}") from e
            out.flush()
            os.fsync(out.fileno())
        actual = h.hexdigest()
        if n != spec.size or actual != spec.sha256:
            raise PromptFileError(
                f"download of {url} does not match the pinned version of {spec.name}: expected sha256 "
                f"{spec.sha256} ({spec.size} bytes), got {actual} ({n} bytes). Nothing was written to {final}."
            )
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def fetch_files(
    specs: Iterable[FileSpec],
    base_url: str,
    dest: str | os.PathLike,
    *,
    force: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    progress: bool | None = None,
    opener: Callable[[str, float], Any] | None = None,
    desc: str = "prompts",
    offline_hint: str = "",
) -> Path:
    """Download each of ``specs`` from ``base_url/<name>`` into ``dest`` and verify it.

    Files already in ``dest`` with the pinned sha256 are skipped unless ``force``; files there
    with another content are replaced, but only by a verified download. ``opener(url, timeout)``
    returns a context-managed binary stream (default: ``urllib.request.urlopen``); ``progress=None``
    shows a tqdm bar only on a terminal. Returns ``dest``. Raises :class:`PromptFileError` on the
    first file that cannot be downloaded or does not match; files finished before it stay.
    """
    specs = list(specs)
    dest = Path(dest).expanduser()
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PromptFileError(f"cannot create the prompt directory {dest}: {e}") from e
    todo = [s for s in specs if force or not file_matches(dest / s.name, s)]
    if not todo:
        return dest
    opener = opener or _default_opener

    from tqdm.auto import tqdm

    disable = None if progress is None else not progress
    with tqdm(total=sum(s.size for s in todo), unit="B", unit_scale=True, desc=desc, disable=disable) as bar:
        for spec in todo:
            bar.set_postfix_str(spec.name, refresh=False)
            _download_one(
                spec,
                file_url(base_url, spec.name),
                dest,
                timeout=timeout,
                opener=opener,
                bar=bar,
                offline_hint=offline_hint,
            )
    return dest


def fetch_suite(
    name: str, dest: str | os.PathLike | None = None, base_url: str | None = None, force: bool = False, **kwargs
) -> Path:
    """``evalkit suites fetch NAME``: download (or check) the prompt files of suite family ``name``."""
    import importlib

    family = name if name in FETCHABLE else next((f for f in FETCHABLE if name.startswith(f + "-")), None)
    if family is None:  # "t2i-compbench-color" fetches its family, "t2i-compbench"
        raise UnknownNameError("fetchable suite", name, sorted(FETCHABLE))
    module_name, _, attribute = FETCHABLE[family].partition(":")
    fetch = getattr(importlib.import_module(module_name), attribute)
    return fetch(dest=dest, base_url=base_url, force=force, **kwargs)

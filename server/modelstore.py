"""Numbered model versions on disk: ``v000007.vw`` with ``v000007.json``
(checksum, examples learned, joined-log position) and a ``CURRENT`` pointer.

Publishing writes the model and its metadata first and moves the pointer last
(atomic rename), so a crash never leaves a pointer to a half-written file.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from vowpalwabbit import pyvw

from bandit.vwargs import SettingsError, check_model_options
from server.eventlog import PRIVATE_FILE, private_dir, private_opener


class ModelStoreError(ValueError):
    pass


@dataclass(frozen=True)
class VersionInfo:
    version: int
    sha256: str
    examples_learned: int
    joined_through: int  # joined-log lines this model has learned from
    created: float
    origin: str  # initial | learned | imported | rollback
    arguments: str


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ModelStore:
    def __init__(self, directory: Path, keep: int = 20):
        self.directory = private_dir(directory)
        self.keep = keep
        self._lock = threading.Lock()

    def path(self, version: int) -> Path:
        return self.directory / f"v{version:06d}.vw"

    def versions(self) -> list[VersionInfo]:
        infos = []
        for meta in sorted(self.directory.glob("v*.json")):
            try:
                infos.append(VersionInfo(**json.loads(meta.read_text("utf-8"))))
            except FileNotFoundError:
                continue  # pruned since the listing
            except (ValueError, TypeError):
                continue  # a half-written metadata file from a crash: not a version
        return [i for i in infos if self.path(i.version).exists()]

    def info(self, version: int) -> VersionInfo:
        for info in self.versions():
            if info.version == version:
                return info
        raise ModelStoreError(f"model version {version} is not kept (kept: {[i.version for i in self.versions()]})")

    def current_version(self) -> int | None:
        """The version ``CURRENT`` points to (None before the first publish)."""
        pointer = self.directory / "CURRENT"
        if not pointer.exists():
            return None
        return int(pointer.read_text().strip())

    def current(self) -> VersionInfo | None:
        version = self.current_version()
        return None if version is None else self.info(version)

    def publish(self, write: Callable[[Path], None], *, examples_learned: int, joined_through: int,
                origin: str, arguments: str) -> VersionInfo:
        """Write a new version with ``write(path)`` and make it current."""
        with self._lock:
            existing = self.versions()
            version = (existing[-1].version if existing else 0) + 1
            path = self.path(version)
            tmp = path.with_suffix(".partial")
            write(tmp)  # VW creates the file itself, with the process's umask
            os.chmod(tmp, PRIVATE_FILE)
            _fsync(tmp)
            os.replace(tmp, path)
            info = VersionInfo(version, sha256_of(path), examples_learned, joined_through,
                               time.time(), origin, arguments)
            _atomic_write(self.directory / f"v{version:06d}.json", json.dumps(asdict(info)))
            self._point(version)
            self._prune()
            return info

    def finish_interrupted_publish(self) -> VersionInfo | None:
        """Point CURRENT at the newest version if a crash came between its
        metadata and the pointer (its file was fsynced and renamed before the
        metadata was written, and its checksum is checked again): the publish
        is finished, as it would have been. For the learning engine at start
        only: it never points CURRENT below its newest version (a rollback
        publishes a new one). Returns the version it finished, if any."""
        with self._lock:
            existing = self.versions()
            current = self.current_version()
            if not existing or current is None or existing[-1].version <= current:
                return None
            newest = existing[-1]
            if sha256_of(self.path(newest.version)) != newest.sha256:
                return None
            self._point(newest.version)
            return newest

    def set_current(self, version: int) -> VersionInfo:
        with self._lock:
            info = self.info(version)
            self._point(version)
            return info

    def _point(self, version: int) -> None:
        _atomic_write(self.directory / "CURRENT", str(version))

    def _prune(self) -> None:
        infos = self.versions()
        current = int((self.directory / "CURRENT").read_text())
        for info in infos[: max(0, len(infos) - self.keep)]:
            if info.version != current:
                self.path(info.version).unlink(missing_ok=True)
                (self.directory / f"v{info.version:06d}.json").unlink(missing_ok=True)


def verify_vw_model(path: Path, expected_sha256: str, arguments: str,
                    required_reduction: str = "ccb_explore_adf") -> str:
    """Everything short of serving it: the checksum; the options its header
    carries (read here, before VW sees the file: only allowed ones); then a
    scratch VW workspace with the surface's own ``arguments`` loads it (never
    unpickled) and saves it again, which must give a body of the same size (a
    file cut off inside its weights does not). Returns its arguments."""
    actual = sha256_of(path)
    if actual != expected_sha256.lower():
        raise ModelStoreError(f"checksum mismatch: expected {expected_sha256}, got {actual}")
    data = Path(path).read_bytes()
    header = read_vw_header(data)
    try:
        check_model_options(header.options)
    except SettingsError as exc:
        raise ModelStoreError(f"model refused: {exc}") from None
    if f"--{required_reduction}" not in header.options.split():
        raise ModelStoreError(f"model was not trained with --{required_reduction}")
    with tempfile.TemporaryDirectory(dir=Path(path).parent, prefix=".verify-") as scratch:
        resaved = Path(scratch) / "resaved.vw"
        try:
            ws = pyvw.Workspace(f"{arguments} -i {path}")
        except Exception as exc:  # VW raises plain RuntimeError for a bad model
            raise ModelStoreError(f"not a Vowpal Wabbit model this surface can load: {exc} "
                                  f"(the surface's arguments: {arguments})") from None
        try:
            ws.save(str(resaved))
            raw = ws.get_arguments()
        finally:
            ws.finish()
        body = len(data) - header.size
        again = resaved.read_bytes()
        if len(again) - read_vw_header(again).size != body:
            raise ModelStoreError(f"model file is truncated or corrupt: its body has {body} bytes, "
                                  f"VW reads {len(again) - read_vw_header(again).size} from it")
    return " ".join(raw) if isinstance(raw, list) else str(raw)


@dataclass(frozen=True)
class VWHeader:
    options: str  # what VW applies when it loads the file, assembled as VW does
    size: int  # bytes, checksum included


def read_vw_header(data: bytes) -> VWHeader:
    """A VW (9.x) model file's header: version, id, label range, bits, lda,
    ngram and skip definitions, the options string, the checksum."""
    reader = _Reader(data)
    reader.take(reader.u32())  # version
    ident = reader.string(reader.u32())
    if reader.take(1) != b"m":
        raise ModelStoreError("not a Vowpal Wabbit model: no model marker in its header")
    reader.take(8)  # min and max label
    options = [f"--id {ident}"] if ident else []
    options.append(f"--bit_precision {reader.u32()}")
    reader.take(4)  # lda
    for name in ("ngram", "skips"):
        options += [f"--{name} {reader.string(3)}" for _ in range(reader.u32())]
    options.append(reader.string(reader.u32()))
    reader.take(4 + 4)  # the checksum, length-prefixed
    return VWHeader(" ".join(options), reader.pos)


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if n > len(self.data) - self.pos:
            raise ModelStoreError("not a Vowpal Wabbit model, or truncated inside its header")
        self.pos += n
        return self.data[self.pos - n:self.pos]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def string(self, n: int) -> str:
        """A C string in n bytes: VW reads it up to its first NUL."""
        return self.take(n).split(b"\0", 1)[0].decode("utf-8", errors="replace")


def _fsync(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", opener=private_opener) as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)

"""Find the VGGFace weight file to use: a given path, the download cache, or (when allowed) the release URL.

Nothing is downloaded at import. ``MPVIEW_OFFLINE=1`` forbids downloading; ``MPVIEW_CACHE`` moves the cache
(weights go in ``$MPVIEW_CACHE/weights``, default ``~/.cache/mpview/weights``). A download is written to a
temporary name, checked to be an HDF5 file, renamed into place, and its SHA-256 recorded next to it
(``<file>.sha256``); later uses compare the file against that record.
"""

from __future__ import annotations

import os
import shutil
import urllib.request
from pathlib import Path
from typing import Callable

import h5py

from pipeline.backbones.errors import WeightsUnavailableError
from pipeline.execution.logs import get_logger
from pipeline.storage.atomic import atomic_path, file_sha256, write_text_atomic

log = get_logger(__name__)

RELEASE_URL = "https://github.com/rcmalli/keras-vggface/releases/download/v2.0"
RELEASED = ("vgg16", "resnet50", "senet50")  # architectures with released weight files (== vggface.ARCHITECTURES)
VGGFACE, RANDOM = "vggface", "random"
OFFLINE_ENV, CACHE_ENV = "MPVIEW_OFFLINE", "MPVIEW_CACHE"
Downloader = Callable[[str, Path], None]


def weight_file_name(arch: str, include_top: bool) -> str:
    """The released file name, e.g. ``rcmalli_vggface_tf_notop_resnet50.h5``."""
    if arch not in RELEASED:
        raise ValueError(f"unknown VGGFace architecture {arch!r}; choose one of {', '.join(RELEASED)}")
    return f"rcmalli_vggface_tf_{'' if include_top else 'notop_'}{arch}.h5"


def weight_url(arch: str, include_top: bool) -> str:
    """The release URL of the weight file."""
    return f"{RELEASE_URL}/{weight_file_name(arch, include_top)}"


def default_cache_dir() -> Path:
    """``$MPVIEW_CACHE/weights``, or ``~/.cache/mpview/weights``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mpview").expanduser() / "weights"


def offline() -> bool:
    """Whether ``MPVIEW_OFFLINE`` forbids downloads."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def urllib_download(url: str, dest: Path) -> None:
    """Stream ``url`` into ``dest``."""
    with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as out:
        shutil.copyfileobj(response, out, length=1 << 20)


def _sidecar(path: Path) -> Path:
    """Where the SHA-256 recorded at download lives."""
    return path.with_name(path.name + ".sha256")


def _how_to_supply(name: str, url: str, cache: Path) -> str:
    """The remedy shared by every 'weights unavailable' message."""
    return (
        f"download {url} yourself and pass --weights PATH (or put {name} in {cache}); "
        f"--weights random runs a smoke test only"
    )


def _download(name: str, url: str, cache: Path, downloader: Downloader) -> Path:
    """Fetch ``url`` into ``cache/name`` atomically and record its SHA-256."""
    final = cache / name
    log.info("downloading %s into %s", url, cache)
    try:
        with atomic_path(final) as tmp:
            downloader(url, tmp)
            if not h5py.is_hdf5(tmp):
                raise WeightsUnavailableError(f"{url} did not deliver an HDF5 file")
    except (OSError, WeightsUnavailableError) as exc:
        raise WeightsUnavailableError(
            f"could not download VGGFace weights {name}: {exc}; {_how_to_supply(name, url, cache)}"
        ) from exc
    write_text_atomic(_sidecar(final), f"{file_sha256(final)}  {name}\n")
    return final


def resolve_weights(
    arch: str,
    include_top: bool,
    weights: str | None = VGGFACE,
    cache_dir: Path | str | None = None,
    downloader: Downloader = urllib_download,
) -> Path | None:
    """The weight file for ``arch``.

    ``weights`` is a path, ``'random'`` (returns None) or ``'vggface'``/None (cache, then download).
    """
    if weights == RANDOM:
        return None
    if weights not in (None, VGGFACE):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(
                f"weights file {path} does not exist (--weights takes a file path, '{VGGFACE}' or '{RANDOM}')"
            )
        return path
    name, url = weight_file_name(arch, include_top), weight_url(arch, include_top)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if (cache / name).is_file():
        return cache / name
    if offline():
        raise WeightsUnavailableError(
            f"VGGFace weights {name} are not in the cache {cache} and downloading is "
            f"disabled ({OFFLINE_ENV}=1); {_how_to_supply(name, url, cache)}"
        )
    return _download(name, url, cache, downloader)


def checked_sha256(path: Path | str) -> str:
    """The file's SHA-256; if a download record exists, refuse a file that no longer matches it."""
    path = Path(path)
    digest = file_sha256(path)
    record = _sidecar(path)
    if record.is_file():
        expected = record.read_text().split()[0]
        if expected != digest:
            raise WeightsUnavailableError(
                f"{path} does not match the SHA-256 recorded when it was downloaded "
                f"({expected} in {record}); delete both files and fetch it again"
            )
    return digest

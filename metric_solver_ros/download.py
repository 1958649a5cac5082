"""Resumable, verified downloads of registered checkpoints into the cache (stdlib ``urllib``).

A file ``F.pth`` of the cache travels as ``F.part`` until its sha256 is verified, then is renamed
atomically (``os.replace``). A dropped connection is resumed from the ``.part``'s size with an
HTTP ``Range`` request, a bounded number of times in one run; a ``.part`` left by an earlier run
is resumed the same way. Where no checksum is known (neither given nor registered), the one of
the first download is recorded in ``F.sha256`` beside the file, and later runs verify against
it. Every failure is a :class:`DownloadError` (a ``ValueError``) whose message is one line.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import http.client
import os
import pathlib
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from metric_solver_ros.weights_registry import WeightEntry

#: Environment variable naming the cache directory (``--cache-dir`` wins over it).
CACHE_ENV = 'METRIC_SOLVER_CACHE'
#: Resumed attempts after a dropped connection, in one run.
RETRIES = 3
#: Socket timeout of connecting and of each read [s].
TIMEOUT_S = 30.0
_CHUNK_BYTES = 1 << 20
_RETRY_PAUSE_S = 0.5  # times the attempt number: let a flaky link settle before resuming
_CONTENT_RANGE = re.compile(r'bytes (\d+)-(\d+)/(\d+|\*)')
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class DownloadError(ValueError):
    """A download or verification failed; the message is one line that says what to do."""


class _Interrupted(Exception):
    """The connection dropped mid-transfer: resumable."""


@dataclasses.dataclass(frozen=True)
class FetchResult:
    """What :func:`fetch_weights` did.

    Attributes:
        path: The verified file in the cache.
        sha256: Its SHA-256 (lower-case hex).
        downloaded: False when a valid file was already in the cache.
        recorded: True when no checksum was known and this one was recorded (trust on first use).
    """

    path: pathlib.Path
    sha256: str
    downloaded: bool
    recorded: bool


def cache_dir(explicit: str | os.PathLike | None = None) -> pathlib.Path:
    """The cache: ``explicit``, else ``$METRIC_SOLVER_CACHE``, else ``~/.cache/metric_solver``."""
    chosen = explicit or os.environ.get(CACHE_ENV) or pathlib.Path.home() / '.cache/metric_solver'
    return pathlib.Path(chosen).expanduser()


def part_path(path: pathlib.Path) -> pathlib.Path:
    """Where ``path`` is written until it is verified."""
    return path.with_suffix('.part')


def record_path(path: pathlib.Path) -> pathlib.Path:
    """Where the checksum recorded on the first download of ``path`` is kept."""
    return path.with_suffix('.sha256')


def file_sha256(path: pathlib.Path) -> str:
    """SHA-256 of a file (lower-case hex), read in chunks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as stream:
        while block := stream.read(_CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def normalise_sha256(text: str) -> str:
    """``text`` as 64 lower-case hex digits; :class:`DownloadError` if it is not a SHA-256."""
    value = text.strip().lower()
    if not re.fullmatch(r'[0-9a-f]{64}', value):
        raise DownloadError(f'--sha256 {text!r} is not 64 hex digits')
    return value


def _read_record(path: pathlib.Path) -> str | None:
    try:
        return normalise_sha256(record_path(path).read_text().split()[0])
    except (FileNotFoundError, IndexError, DownloadError):
        return None  # no record, or a damaged one: as if nothing were known


def _source_url(url: str) -> str:
    """A URL for ``urlopen``; a plain local path becomes a ``file://`` URL (mirrors on disk)."""
    if urllib.parse.urlsplit(url).scheme in ('http', 'https', 'file', 'ftp'):
        return url
    return pathlib.Path(url).expanduser().resolve().as_uri()


def fetch_weights(entry: WeightEntry, *, url: str | None = None, sha256: str | None = None,
                  directory: str | os.PathLike | None = None, accept_license: bool = False,
                  progress: bool | None = None) -> FetchResult:
    """Make sure the verified file of ``entry`` is in the cache; download it if needed.

    Args:
        entry: The registered checkpoint.
        url: Another source (a mirror, ``file://...`` or a local path); default ``entry.url``.
        sha256: Expected SHA-256; wins over the registered one and over a recorded one.
        directory: Cache directory (see :func:`cache_dir`).
        accept_license: Required for entries whose licence forbids commercial use.
        progress: Show a progress bar on stderr; None shows it only on a terminal.

    Returns:
        The file's path and checksum, and whether it was downloaded or recorded.

    Raises:
        DownloadError: Licence not accepted, no network, HTTP error, checksum mismatch (the
            bad file is removed), disk full.
    """
    if entry.needs_acceptance and not accept_license:
        raise DownloadError(f'{entry.name} is licensed {entry.licence} (non-commercial use '
                            'only); pass --accept-license to accept its terms')
    given = normalise_sha256(sha256) if sha256 else None
    folder = cache_dir(directory)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DownloadError(f'cannot create the cache directory {folder}: {error}') from None
    path = folder / entry.file_name
    expected = given or entry.sha256 or _read_record(path)
    origin = ('--sha256' if sha256 else 'the registry' if entry.sha256
              else f'the record {record_path(path)}')

    if path.exists():
        actual = file_sha256(path)
        if expected is None or actual == expected:
            part_path(path).unlink(missing_ok=True)  # a stale .part of an earlier run
            recorded = expected is None
            if recorded:  # a file copied in by hand: trust it, as on a first download
                record_path(path).write_text(f'{actual}  {entry.file_name}\n')
            return FetchResult(path, actual, downloaded=False, recorded=recorded)
        path.unlink()  # damaged or replaced: never serve it, fetch it again

    source = _source_url(url or entry.url)
    actual = download(source, path, expected_sha256=expected, origin=origin, progress=progress)
    recorded = expected is None
    if entry.sha256 is None:  # where the registry is silent, the cache remembers what it got
        record_path(path).write_text(f'{actual}  {entry.file_name}\n')
    return FetchResult(path, actual, downloaded=True, recorded=recorded)


def download(url: str, path: pathlib.Path, *, expected_sha256: str | None = None,
             origin: str = 'the caller', retries: int = RETRIES, timeout_s: float = TIMEOUT_S,
             progress: bool | None = None) -> str:
    """Download ``url`` to ``path`` through ``path``'s ``.part``, resuming after drops.

    Args:
        url: Source URL (``http(s)://`` with Range support for resuming, or ``file://``).
        path: Destination; written only once the content is verified.
        expected_sha256: Refuse (and delete) content with another SHA-256; None accepts any.
        origin: Where ``expected_sha256`` comes from, for the mismatch message.
        retries: Resumed attempts after a dropped connection.
        timeout_s: Socket timeout [s].
        progress: Progress bar on stderr; None shows it only on a terminal.

    Returns:
        The SHA-256 of the file now at ``path``.

    Raises:
        DownloadError: Unreachable host, HTTP error, too many drops, checksum mismatch, disk full.
    """
    part = part_path(path)
    for attempt in range(retries + 1):
        try:
            _transfer(url, part, path, timeout_s, progress)
            break
        except _Interrupted as error:
            if attempt == retries:
                raise DownloadError(
                    f'{url}: the connection dropped {retries + 1} times ({error}); {part} is '
                    'kept and the next run resumes it') from None
            time.sleep(_RETRY_PAUSE_S * (attempt + 1))
    actual = file_sha256(part)
    if expected_sha256 is not None and actual != expected_sha256:
        part.unlink()
        raise DownloadError(f'checksum mismatch for {url}: got sha256 {actual}, expected '
                            f'{expected_sha256} (from {origin}); the download was removed')
    os.replace(part, path)
    return actual


def _transfer(url: str, part: pathlib.Path, path: pathlib.Path, timeout_s: float,
              progress: bool | None) -> None:
    """Append the rest of ``url`` to ``part`` (from its current size); raise on any failure."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {'User-Agent': 'metric-solver-weights'}
    if offset:
        headers['Range'] = f'bytes={offset}-'
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                          timeout=timeout_s)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # Range past the end: finished, or not this file
            total = (error.headers.get('Content-Range') or '').rpartition('/')[2]
            if total == str(offset):
                return
            part.unlink()
            raise _Interrupted(f'the server refused to resume at byte {offset}') from None
        raise DownloadError(f'{url}: HTTP {error.code} {error.reason}') from None
    except urllib.error.URLError as error:
        if urllib.parse.urlsplit(url).scheme == 'file':
            raise DownloadError(f'cannot read {url}: {error.reason}') from None
        raise DownloadError(_unreachable(url, path, error.reason)) from None
    except (http.client.HTTPException, ConnectionError, TimeoutError) as error:
        raise _Interrupted(str(error) or type(error).__name__) from None

    with response:
        total: int | None
        if getattr(response, 'status', None) == 206:
            match = _CONTENT_RANGE.fullmatch(response.headers.get('Content-Range') or '')
            if not match or int(match[1]) != offset:
                part.unlink(missing_ok=True)
                raise _Interrupted(f'asked for bytes from {offset}, the server sent '
                                   f'{response.headers.get("Content-Range")!r}; restarting')
            total = None if match[3] == '*' else int(match[3])
        else:  # 200 (the server ignored Range) or file://: the whole file, from byte 0
            offset = 0
            length = response.headers.get('Content-Length')
            total = int(length) if length and length.isdigit() else None
        _copy(response, part, offset, total, progress, url)


def _copy(response, part: pathlib.Path, offset: int, total: int | None, progress: bool | None,
          url: str) -> None:
    """Write the body of ``response`` into ``part`` from byte ``offset``."""
    from tqdm import tqdm

    received = offset
    bar = tqdm(total=total, initial=offset, unit='B', unit_scale=True, unit_divisor=1024,
               desc=part.stem, file=sys.stderr, disable=None if progress is None else not progress,
               leave=False)
    try:
        with bar, open(part, 'ab' if offset else 'wb') as out:
            while True:
                try:
                    block = response.read(_CHUNK_BYTES)
                except (http.client.HTTPException, OSError) as error:  # any socket/TLS failure
                    raise _Interrupted(str(error) or type(error).__name__) from None
                if not block:
                    break
                out.write(block)
                received += len(block)
                bar.update(len(block))
    except OSError as error:
        if error.errno not in _NO_SPACE:
            raise
        part.unlink(missing_ok=True)
        raise DownloadError(f'disk full while writing {part} ({received} bytes of {url}); '
                            'the partial file was removed') from None
    if total is not None and received < total:  # older http.client returns b'' on a drop
        raise _Interrupted(f'got {received} of {total} bytes')


def _unreachable(url: str, path: pathlib.Path, reason: object) -> str:
    """The no-network message: what failed and where to put the file by hand."""
    host = urllib.parse.urlsplit(url).netloc or url
    return (f'cannot reach {host} ({reason}); with no network, fetch {url} elsewhere and copy '
            f'it to {path} (or pass --url with a mirror)')

"""Verified, resumable downloads of the workflow's input assets.

One entry point, :func:`fetch`, downloads one asset described by an :class:`AssetSpec`:

* ENCODE / 4DN style metadata JSON (``metadata_url``) supplies ``md5sum`` and ``file_size`` unless
  they are pinned in the spec, and every ``expect`` field must equal the metadata value.
* The body streams to ``<dest>.part`` in 1 MiB chunks with the md5 computed on the fly; an
  interrupted transfer resumes with an HTTP ``Range`` request; transient failures (connection
  errors, timeouts and stalled reads, HTTP 408/429/500/502/503/504) are retried with exponential
  backoff; other HTTP errors fail at once.
* Only a complete ``.part`` whose size and md5 match is renamed (atomically) to ``dest``; a
  provenance record is written next to it as ``<dest>.provenance.json``.
* An optional lock file (JSON: dest path relative to the lock file's folder -> {md5, size, url})
  pins what was verified before ("trust on first use") and is updated safely by concurrent
  processes. A file that differs from its lock entry is refused with what changed (md5, size and
  URL, before and now) and the command that accepts it: ``python -m prism.download accept PATH``
  shows the entry and removes it, so the next download is verified and pinned afresh.
* ``file://`` URLs (local mirrors) go through the same streaming, resume and verification code.
* A pinned ``sha256`` (Hugging Face lists one for each LFS file) is checked besides size and md5;
  :func:`resolve_hf_files` finds a file whose name holds a date from a repository's tree listing.

Basic-auth credentials come only from environment variables (``AssetSpec.auth_env``; for
``*.4dnucleome.org`` URLs ``FOURDN_ACCESS_KEY`` / ``FOURDN_SECRET_KEY`` are used by default) and are
never sent to another host (scheme, host and port must match), redirects included.

:class:`AssetError` is the only exception users see; its message is one line.
The module only imports light standard-library modules at import time.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

__all__ = ["AssetError", "AssetSpec", "HFFile", "accept", "fetch", "resolve_hf_files", "resolve_hf_revision"]

CHUNK = 1 << 20  # bytes per read/write
MAX_BACKOFF = 120.0  # cap on one retry delay, seconds
LOG_EVERY = 5.0  # seconds between progress lines
TRANSIENT_HTTP = frozenset({408, 429, 500, 502, 503, 504})
REFUSED_STATUS = frozenset({"revoked", "deleted"})
FOURDN_AUTH_ENV = ("FOURDN_ACCESS_KEY", "FOURDN_SECRET_KEY")
USER_AGENT = "prism-workflow-downloader/1"
LOCK_NAME = "checksums.lock.json"  # the workflow's lock file (resources/checksums.lock.json)

# Replaced in tests to make retries instantaneous.
_sleep: Callable[[float], None] = time.sleep


class AssetError(Exception):
    """The one error users see from this module; the message is a single line."""

    def __init__(self, message: str):
        super().__init__(_one_line(message))


@dataclass
class AssetSpec:
    url: str  # http(s):// or file://
    md5: str | None = None  # pinned checksum (hex); wins over metadata
    size: int | None = None  # pinned size in bytes
    metadata_url: str | None = None  # ENCODE/4DN-style JSON with md5sum, file_size, ...
    expect: dict[str, str] = field(default_factory=dict)  # metadata fields that must match
    auth_env: tuple[str, str] | None = None  # env var names holding basic-auth user/password
    sha256: str | None = None  # pinned SHA-256 (hex), checked besides md5 (Hugging Face lists it for LFS files)


class _Transient(Exception):
    """A failure worth retrying."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _redact(url: str | None) -> str | None:
    """Drop query and fragment (pre-signed cloud URLs carry signatures there)."""
    if not url:
        return url
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        port = {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


def _norm_md5(value: Any, what: str, name: str) -> str | None:
    if value in (None, ""):
        return None
    text = str(value).strip().lower()
    if len(text) != 32 or any(c not in "0123456789abcdef" for c in text):
        raise AssetError(f"{name}: {what} md5 {value!r} is not 32 hex digits")
    return text


def _norm_size(value: Any, what: str, name: str) -> int | None:
    if value in (None, ""):
        return None
    try:
        size = int(value)
    except (TypeError, ValueError):
        size = -1
    if size < 0 or isinstance(value, bool):
        raise AssetError(f"{name}: {what} size {value!r} is not a byte count")
    return size


def _norm_sha256(value: Any, name: str) -> str | None:
    if value in (None, ""):
        return None
    text = str(value).strip().lower()
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise AssetError(f"{name}: sha256 {value!r} is not 64 hex digits")
    return text


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _md5_file(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


class _Ctx:
    """Per-call state: names, the opener, retry policy, logging and counters."""

    def __init__(self, spec: AssetSpec, name: str, retries: int, backoff: float, timeout: float,
                 log: Callable[[str], None]):
        self.spec = spec
        self.name = name
        self.retries = max(0, int(retries))
        self.backoff = max(0.0, float(backoff))
        self.timeout = timeout
        self.log = log
        self.auth = _auth_header(spec, name)
        trusted = {_origin(spec.url)}
        if spec.metadata_url:
            trusted.add(_origin(spec.metadata_url))
        self.auth_origins = {o for o in trusted if o[0] in ("http", "https")}
        self._opener = None
        self.failures_total = 0
        self.bytes_in = 0
        self.t0 = time.monotonic()
        self.last_log = self.t0

    @property
    def opener(self):
        if self._opener is None:
            import urllib.request

            self._opener = urllib.request.build_opener(_redirect_handler())
        return self._opener

    def request(self, url: str, headers: dict[str, str]):
        import urllib.request

        req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **headers})
        if self.auth and _origin(url) in self.auth_origins:
            # Unredirected: urllib does not copy it onto redirects; our handler re-adds it
            # only when the redirect stays on the same scheme/host/port.
            req.add_unredirected_header("Authorization", self.auth)
        return req

    def progress(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - self.last_log < LOG_EVERY:
            return
        self.last_log = now
        rate = self.bytes_in / max(now - self.t0, 1e-9) / 1e6
        if total:
            self.log(f"{self.name}: {_mb(done)} / {_mb(total)} ({100.0 * done / total:.1f}%) {rate:.1f} MB/s")
        else:
            self.log(f"{self.name}: {_mb(done)} {rate:.1f} MB/s")

    def with_retries(self, url: str, attempt: Callable[[], Any], progress: Callable[[], int] | None = None):
        failures = 0
        while True:
            mark = progress() if progress else 0
            try:
                return attempt()
            except _Transient as exc:
                if progress is not None and progress() - mark >= CHUNK:
                    failures = 0  # real progress: a flaky but working link keeps going
                if failures >= self.retries:
                    raise AssetError(f"{self.name}: giving up after {failures + 1} failed attempts "
                                     f"on {_redact(url)}: {exc}") from None
                delay = min(self.backoff * 2 ** failures, MAX_BACKOFF)
                if exc.retry_after is not None:
                    delay = max(delay, min(exc.retry_after, MAX_BACKOFF))
                failures += 1
                self.failures_total += 1
                self.log(f"{self.name}: {exc}; retry {failures}/{self.retries} in {delay:.2f}s")
                _sleep(delay)


def _redirect_handler():
    import urllib.request

    class _SameOriginAuthRedirect(urllib.request.HTTPRedirectHandler):
        """Follow redirects, keeping Range; keep Authorization only on the same origin."""

        def redirect_request(self, req, fp, code, msg, headers, newurl):
            new = super().redirect_request(req, fp, code, msg, headers, newurl)
            if new is None:
                return None
            for key in [k for k in new.headers if k.lower() == "authorization"]:
                del new.headers[key]
            auth = req.unredirected_hdrs.get("Authorization") or req.headers.get("Authorization")
            if auth and _origin(new.full_url) == _origin(req.full_url):
                new.add_unredirected_header("Authorization", auth)
            return new

    return _SameOriginAuthRedirect()


def _auth_header(spec: AssetSpec, name: str) -> str | None:
    names = spec.auth_env
    if names is None and (urlsplit(spec.url).hostname or "").lower().endswith("4dnucleome.org"):
        names = FOURDN_AUTH_ENV
    if not names:
        return None
    user, password = os.environ.get(names[0]), os.environ.get(names[1])
    if not user and not password:
        return None
    if not user or not password:
        missing = names[0] if not user else names[1]
        raise AssetError(f"{name}: {missing} is not set but {names[0] if user else names[1]} is; "
                         f"set both or neither")
    import base64

    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def _retry_after(headers) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _http_error(ctx: _Ctx, exc, url: str, what: str):
    """Map an HTTPError to _Transient or AssetError (raised)."""
    code = exc.code
    reason = _one_line(exc.reason or "")
    if code in TRANSIENT_HTTP:
        raise _Transient(f"HTTP {code} {reason}", _retry_after(exc.headers))
    hint = ""
    if code in (401, 403):
        names = ctx.spec.auth_env or (FOURDN_AUTH_ENV if "4dnucleome.org" in url else None)
        if names and not ctx.auth:
            hint = f"; credentials may be needed: set {names[0]} and {names[1]}"
    at = _redact(getattr(exc, "url", None) or url)
    raise AssetError(f"{ctx.name}: HTTP {code} {reason} for {what} {at}{hint}")


def _file_url_path(url: str) -> Path:
    from urllib.request import url2pathname

    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise AssetError(f"file URL with a host is not supported: {url}")
    return Path(url2pathname(parts.path))


# ---------------------------------------------------------------------------------------------
# metadata


def _get_metadata(ctx: _Ctx, url: str) -> dict:
    if urlsplit(url).scheme.lower() == "file":
        try:
            raw = _file_url_path(url).read_bytes()
        except OSError as exc:
            raise AssetError(f"{ctx.name}: cannot read metadata {url}: {exc}") from None
    else:
        import http.client
        import urllib.error

        def attempt() -> bytes:
            req = ctx.request(url, {"Accept": "application/json"})
            try:
                with ctx.opener.open(req, timeout=ctx.timeout) as resp:
                    return resp.read()
            except urllib.error.HTTPError as exc:
                with exc:
                    _http_error(ctx, exc, url, "metadata")
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                raise _Transient(f"metadata request failed: {_describe(exc)}") from None

        raw = ctx.with_retries(url, attempt)
    return _json_object(raw, f"{ctx.name}: metadata at {url}")


def _json_object(text, what: str) -> dict:
    """Parse a JSON object, or raise one AssetError line starting with ``what``."""
    try:
        data = json.loads(text)
    except ValueError:
        raise AssetError(f"{what} is not valid JSON") from None
    if not isinstance(data, dict):
        raise AssetError(f"{what} is not a JSON object")
    return data


def _check_metadata(name: str, spec: AssetSpec, meta: dict) -> None:
    status = meta.get("status")
    if isinstance(status, str) and status.strip().lower() in REFUSED_STATUS:
        raise AssetError(f"{name}: metadata status is '{status}', refusing a {status} file "
                         f"({spec.metadata_url})")
    for key, want in spec.expect.items():
        if key not in meta:
            raise AssetError(f"{name}: metadata field '{key}' is missing, config expects '{want}' "
                             f"({spec.metadata_url})")
        got = meta[key]
        if str(got) != str(want):
            raise AssetError(f"{name}: metadata field '{key}' is '{got}', config expects '{want}' "
                             f"({spec.metadata_url})")


def resolve_experiment_file(experiment_url: str, select: dict[str, str], *, name: str, retries: int = 5,
                            backoff: float = 2.0, timeout: float = 60.0,
                            log: Callable[[str], None] = print) -> str:
    """The accession of the one released file of an ENCODE experiment whose fields match ``select``.

    For assets known by experiment, not file (the paper's DNase footprints: "the footprint bigBed of
    experiment ENCSR000EOT"). ``experiment_url`` is the experiment's JSON with ``files`` embedded as
    objects (``accession``, ``output_type``, ``file_format``, ``assembly``, ``status``); ``select`` is
    e.g. ``{"output_type": "footprints", "file_format": "bigBed", "assembly": "GRCh38"}``. No match, or
    more than one, is an AssetError naming what was found, so a changed experiment never goes unnoticed.
    """
    ctx = _Ctx(AssetSpec(url=experiment_url), name, retries, backoff, timeout, log)
    files = _get_metadata(ctx, experiment_url).get("files")
    if not isinstance(files, list):
        raise AssetError(f"{name}: experiment metadata {experiment_url} has no 'files' list")
    files = [f for f in files if isinstance(f, dict) and str(f.get("status", "")).lower() not in REFUSED_STATUS
             and str(f.get("status", "released")).lower() != "replaced"]
    hits = [f for f in files if all(str(f.get(k)) == str(v) for k, v in select.items())]
    if len(hits) != 1:
        seen = sorted({" ".join(str(f.get(k)) for k in select) for f in files})
        what = "no file" if not hits else f"{len(hits)} files ({', '.join(str(f.get('accession')) for f in hits)})"
        raise AssetError(f"{name}: {what} of {experiment_url} match {select}; its files have: {'; '.join(seen)}")
    acc = hits[0].get("accession")
    if not isinstance(acc, str) or not acc:
        raise AssetError(f"{name}: the matching file of {experiment_url} has no accession")
    log(f"{experiment_url}: {select} is {acc}")
    return acc


HF_ENDPOINT = "https://huggingface.co"
MAX_LISTING_PAGES = 100  # the tree API pages long listings (Link: rel="next"); ours hold a few files


@dataclass(frozen=True)
class HFFile:
    """One file of a Hugging Face repository at a pinned commit, as its tree listing describes it."""

    path: str  # path in the repository
    url: str  # <endpoint>/<repo>/resolve/<revision>/<path>
    size: int | None
    sha256: str | None  # the LFS object id (SHA-256 of the content); None for files kept in git itself

    def spec(self) -> AssetSpec:
        """What :func:`fetch` verifies: size and SHA-256 from the listing; md5 is recorded on first use."""
        return AssetSpec(url=self.url, size=self.size, sha256=self.sha256)


def _get_json_pages(ctx: _Ctx, url: str) -> list:
    """A JSON list, following ``Link: <...>; rel="next"`` pages; file:// reads one local file."""
    import re

    if urlsplit(url).scheme.lower() == "file":
        try:
            raw = _file_url_path(url).read_bytes()
        except OSError as exc:
            raise AssetError(f"{ctx.name}: cannot read listing {url}: {exc}") from None
        pages = [(raw, None)]
    else:
        import http.client
        import urllib.error

        pages, next_url = [], url
        while next_url is not None:
            if len(pages) >= MAX_LISTING_PAGES:
                raise AssetError(f"{ctx.name}: listing {url} has more than {MAX_LISTING_PAGES} pages")

            def attempt(page_url=next_url):
                req = ctx.request(page_url, {"Accept": "application/json"})
                try:
                    with ctx.opener.open(req, timeout=ctx.timeout) as resp:
                        return resp.read(), resp.headers.get("Link")
                except urllib.error.HTTPError as exc:
                    with exc:
                        _http_error(ctx, exc, page_url, "listing")
                except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                    raise _Transient(f"listing request failed: {_describe(exc)}") from None

            raw, link = ctx.with_retries(next_url, attempt)
            pages.append((raw, link))
            m = re.search(r'<([^>]+)>\s*;\s*rel="?next"?', link or "")
            next_url = m.group(1) if m else None
    out = []
    for raw, _ in pages:
        try:
            data = json.loads(raw)
        except ValueError:
            raise AssetError(f"{ctx.name}: listing {url} is not valid JSON") from None
        if not isinstance(data, list):
            raise AssetError(f"{ctx.name}: listing {url} is not a JSON list")
        out += data
    return out


def _hf_quote(path: str) -> str:
    from urllib.parse import quote

    return quote(path.strip("/"), safe="/")


def resolve_hf_revision(repo: str, ref: str = "main", *, name: str | None = None, endpoint: str = HF_ENDPOINT,
                        retries: int = 5, backoff: float = 2.0, timeout: float = 60.0,
                        log: Callable[[str], None] = print) -> str:
    """The 40-hex commit that branch or tag ``ref`` of model repo ``repo`` points to now (to pin in config)."""
    name = name or repo
    url = f"{endpoint.rstrip('/')}/api/models/{_hf_quote(repo)}/revision/{_hf_quote(ref)}"
    ctx = _Ctx(AssetSpec(url=url), name, retries, backoff, timeout, log)
    sha = _get_metadata(ctx, url).get("sha")
    if not (isinstance(sha, str) and len(sha) == 40 and all(c in "0123456789abcdef" for c in sha)):
        raise AssetError(f"{name}: {url} has no 40-hex 'sha' (got {sha!r})")
    return sha


def resolve_hf_files(repo: str, revision: str, folder: str, pattern: str, *, name: str,
                     log: Callable[[str], None] = print, endpoint: str = HF_ENDPOINT, retries: int = 5,
                     backoff: float = 2.0, timeout: float = 60.0) -> HFFile:
    """The one file of ``folder`` (not recursive) in model repo ``repo`` at commit ``revision`` whose
    name matches the glob ``pattern``, e.g. ``mse-*+Fold11.ckpt`` for a name that holds a date.

    Reads ``<endpoint>/api/models/<repo>/tree/<revision>/<folder>``: a JSON list of
    ``{type: file|directory, path, size, oid, lfs: {oid: <sha256>, size, pointerSize}}``. ``revision``
    must be a commit (40 hex digits), so the listing, and the file, cannot change under a pin. No match,
    or more than one, is an AssetError listing what the folder holds.
    """
    if not (len(revision) == 40 and all(c in "0123456789abcdef" for c in revision)):
        raise AssetError(f"{name}: revision {revision!r} of {repo} is not a commit hash (40 hex digits); pin one "
                         f"(prism.download.resolve_hf_revision('{repo}') gives the current one)")
    base = endpoint.rstrip("/")
    url = f"{base}/api/models/{_hf_quote(repo)}/tree/{revision}"
    if folder.strip("/"):
        url += "/" + _hf_quote(folder)
    ctx = _Ctx(AssetSpec(url=url), name, retries, backoff, timeout, log)
    entries = [e for e in _get_json_pages(ctx, url) if isinstance(e, dict) and isinstance(e.get("path"), str)]
    files = [e for e in entries if e.get("type") == "file"]
    hits = [e for e in files if fnmatch.fnmatchcase(e["path"].rsplit("/", 1)[-1], pattern)]
    if len(hits) != 1:
        seen = ", ".join(sorted(e["path"].rsplit("/", 1)[-1] + ("/" if e.get("type") == "directory" else "")
                                for e in entries)) or "nothing"
        what = "no file" if not hits else f"{len(hits)} files"
        raise AssetError(f"{name}: {what} in {repo}@{revision[:12]}/{folder.strip('/')} match {pattern!r}; "
                         f"it holds: {seen}")
    hit = hits[0]
    lfs = hit.get("lfs") if isinstance(hit.get("lfs"), dict) else {}
    sha256 = lfs.get("oid") or lfs.get("sha256")
    sha256 = sha256[len("sha256:"):] if isinstance(sha256, str) and sha256.startswith("sha256:") else sha256
    size = lfs.get("size", hit.get("size"))
    out = HFFile(path=hit["path"], url=f"{base}/{_hf_quote(repo)}/resolve/{revision}/{_hf_quote(hit['path'])}",
                 size=_norm_size(size, "listed", name), sha256=_norm_sha256(sha256, name))
    log(f"{name}: {repo}@{revision[:12]} {folder.strip('/')}/{pattern} is {out.path}"
        + (f" ({_mb(out.size)})" if out.size else ""))
    return out


def _scalar_fields(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool)) or v is None}


# ---------------------------------------------------------------------------------------------
# lock file


def _lock_key(lock: Path, dest: Path) -> str:
    rel = os.path.relpath(os.path.abspath(dest), os.path.dirname(os.path.abspath(lock)))
    return Path(rel).as_posix()


def _read_lock(lock: Path, name: str) -> dict:
    try:
        text = lock.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise AssetError(f"{name}: cannot read lock file {lock}: {exc}") from None
    if not text.strip():
        return {}
    return _json_object(text, f"{name}: lock file {lock}")


def _lock_record(lock: Path, key: str, entry: dict, name: str) -> None:
    """Insert entry under key unless present; a conflicting entry raises. Safe across processes."""
    import fcntl

    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock.with_name(lock.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        data = _read_lock(lock, name)
        old = data.get(key)
        if isinstance(old, dict):
            for fld in ("md5", "size"):
                if old.get(fld) not in (None, "") and str(old[fld]).lower() != str(entry[fld]).lower():
                    raise _lock_conflict(name, lock.parent / key, lock, old, f"verified md5 {entry['md5']}, "
                                         f"{_bytes(entry['size'])}, {_redact(entry.get('url'))}")
            merged = {**entry, **{k: v for k, v in old.items() if v not in (None, "")}}
            if merged == old:
                return
            data[key] = merged
        else:
            data[key] = entry
        _write_json_atomic(lock, data)
    finally:
        os.close(fd)  # releases the flock


def _bytes(n) -> str:
    return "size unknown" if n is None else f"{n:,} bytes"


def _lock_conflict(name: str, dest: Path, lock: Path, entry: dict, now: str) -> AssetError:
    """The file differs from what the lock pinned: what it was, what it is now, how to accept it."""
    was = (f"md5 {entry.get('md5')}, {_bytes(entry.get('size'))}, {_redact(entry.get('url')) or 'url unknown'}"
           if entry else "an entry that is gone now")
    command = f"python -m prism.download accept {os.path.abspath(dest)}"
    if Path(lock).name != LOCK_NAME:
        command += f" --lock {os.path.abspath(lock)}"
    return AssetError(f"{name}: differs from what lock file {lock} pinned: then {was}; now {now}. If the new file is "
                      f"right, accept it with: {command}")


def find_lock(path: str | Path, name: str = LOCK_NAME) -> Path:
    """The lock file that pins `path`: the nearest `name` in the folders above it."""
    for folder in Path(os.path.abspath(path)).parents:
        if (folder / name).is_file():
            return folder / name
    raise AssetError(f"{path}: no {name} in any folder above it; give the lock file with --lock")


def accept(path: str | Path, lock: str | Path | None = None, log: Callable[[str], None] = print) -> dict:
    """Remove `path`'s entry from the lock file (found above `path` unless given) and return it.

    The next download of `path` is then verified against its source alone (metadata, pinned md5 or
    first use) and pinned again. `path` itself is left alone: delete it to download the new file.
    """
    lock_path = Path(lock) if lock is not None else find_lock(path)
    key = _lock_key(lock_path, Path(path))
    import fcntl

    fd = os.open(lock_path.with_name(lock_path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # the same lock as _lock_record: no concurrent download loses its entry
        data = _read_lock(lock_path, str(path))
        if key not in data:
            raise AssetError(f"{path}: {lock_path} has no entry {key!r}; nothing to accept")
        entry = data.pop(key)
        _write_json_atomic(lock_path, data)
    finally:
        os.close(fd)
    log(f"removed {key} from {lock_path}: md5 {entry.get('md5')}, {_bytes(entry.get('size'))}, "
        f"{_redact(entry.get('url'))}")
    log(f"the next run verifies {key} against its source alone and pins it again"
        + (f"; {path} is kept: delete it to download the new file" if Path(path).exists() else ""))
    return entry


def main(argv=None) -> int:
    """python -m prism.download accept PATH... [--lock LOCK]: accept new files that differ from the lock."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m prism.download", description=main.__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    acc = sub.add_parser("accept", help="show a file's lock entry and remove it, so that the next run pins the "
                                        "new file")
    acc.add_argument("paths", nargs="+", help="downloaded files (resources/...)")
    acc.add_argument("--lock", help="the lock file (default: checksums.lock.json in a folder above each path)")
    args = ap.parse_args(argv)
    try:
        for p in args.paths:
            accept(p, args.lock)
    except AssetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------------------------------------
# transfer


class _Part:
    """The .part file and the md5 of exactly its current content."""

    def __init__(self, path: Path, ctx: _Ctx):
        self.path = path
        self.ctx = ctx
        self.hasher = None
        self.offset = 0

    def sync(self) -> int:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = 0
        if self.hasher is None or size != self.offset:
            if size >= 64 * CHUNK:
                self.ctx.log(f"{self.ctx.name}: hashing {_mb(size)} already in {self.path.name} to resume")
            self.hasher = hashlib.md5()
            self.offset = 0
            if size:
                with open(self.path, "rb") as f:
                    for chunk in iter(lambda: f.read(CHUNK), b""):
                        self.hasher.update(chunk)
                        self.offset += len(chunk)
        return self.offset

    def reset(self) -> None:
        self.path.unlink(missing_ok=True)
        self.hasher = hashlib.md5()
        self.offset = 0


def _describe(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    if reason is not None and not isinstance(reason, str):
        exc = reason
    text = str(exc) or type(exc).__name__
    return _one_line(f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text)


def _parse_content_range(value: str | None) -> tuple[int | None, int | None, int | None]:
    """'bytes a-b/n' -> (a, b, n); 'bytes */n' -> (None, None, n); unknown parts are None."""
    if not value:
        return None, None, None
    try:
        unit, _, rest = value.strip().partition(" ")
        span, _, total = rest.partition("/")
        n = int(total) if total.strip() not in ("", "*") else None
        if span.strip() == "*":
            return None, None, n
        a, _, b = span.partition("-")
        return int(a), int(b), n
    except ValueError:
        return None, None, None


def _stream(ctx: _Ctx, body, part: _Part, expected_body: int | None, total: int | None) -> None:
    import http.client

    received = 0
    with open(part.path, "ab") as out:
        while True:
            try:
                chunk = body.read(CHUNK)
            except (OSError, http.client.HTTPException, ValueError) as exc:
                raise _Transient(f"read failed after {_mb(part.offset)}: {_describe(exc)}") from None
            if not chunk:
                break
            try:
                out.write(chunk)
            except OSError as exc:
                raise AssetError(f"{ctx.name}: cannot write {part.path}: {exc}") from None
            part.hasher.update(chunk)
            part.offset += len(chunk)
            received += len(chunk)
            ctx.bytes_in += len(chunk)
            ctx.progress(part.offset, total)
        try:
            out.flush()
            os.fsync(out.fileno())
        except OSError as exc:
            raise AssetError(f"{ctx.name}: cannot write {part.path}: {exc}") from None
    if expected_body is not None and received < expected_body:
        raise _Transient(f"connection closed after {received} of {expected_body} bytes")


def _attempt(ctx: _Ctx, url: str, part: _Part, size: int | None, state: dict) -> None:
    """One try at completing .part; returns when the body is complete (not yet verified)."""
    have = part.sync()
    if size is not None and have > size:
        ctx.log(f"{ctx.name}: {part.path.name} is larger than the expected {size} bytes; starting over")
        part.reset()
        have = 0
    if size is not None and have == size and have > 0:
        return
    if urlsplit(url).scheme.lower() == "file":
        _attempt_file(ctx, url, part, size, have, state)
    else:
        _attempt_http(ctx, url, part, size, have, state)


def _check_total(ctx: _Ctx, part: _Part, total: int | None, size: int | None, where: str) -> None:
    if size is not None and total is not None and total != size:
        part.reset()
        raise AssetError(f"{ctx.name}: size mismatch: expected {size} bytes, source reports {total} "
                         f"({where}); .part removed")


def _attempt_file(ctx: _Ctx, url: str, part: _Part, size: int | None, have: int, state: dict) -> None:
    path = _file_url_path(url)
    try:
        src = open(path, "rb")
    except FileNotFoundError:
        raise AssetError(f"{ctx.name}: source file not found: {path} ({url})") from None
    except OSError as exc:
        raise AssetError(f"{ctx.name}: cannot open {path}: {exc}") from None
    with src:
        total = os.fstat(src.fileno()).st_size
        state["final_url"] = url
        _check_total(ctx, part, total, size, url)
        if have > total:
            part.reset()
            have = 0
        src.seek(have)
        _stream(ctx, src, part, total - have, total)


def _attempt_http(ctx: _Ctx, url: str, part: _Part, size: int | None, have: int, state: dict) -> None:
    import http.client
    import urllib.error

    headers = {"Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    req = ctx.request(url, headers)
    try:
        resp = ctx.opener.open(req, timeout=ctx.timeout)
    except urllib.error.HTTPError as exc:
        with exc:
            if exc.code == 416:
                _, _, total = _parse_content_range(exc.headers.get("Content-Range"))
                if have and (total == have or (total is None and size == have)):
                    return  # .part already complete; verification decides
                part.reset()
                raise _Transient(f"HTTP 416 for a resume at byte {have}; restarting from zero") from None
            _http_error(ctx, exc, url, "download")
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _Transient(f"request failed: {_describe(exc)}") from None
    with resp:
        final = resp.geturl()
        state["final_url"] = final
        length = resp.headers.get("Content-Length")
        length = int(length) if length and length.strip().isdigit() else None
        if resp.status == 206:
            start, _, total = _parse_content_range(resp.headers.get("Content-Range"))
            if start != have:
                part.reset()
                raise _Transient(f"server resumed at byte {start}, not {have}; restarting from zero")
            state["resumed"] = True
        elif resp.status == 200:
            if have:
                ctx.log(f"{ctx.name}: server ignored the Range request; restarting from zero")
                part.reset()
            total = length
        else:
            raise AssetError(f"{ctx.name}: unexpected HTTP {resp.status} for {_redact(final)}")
        _check_total(ctx, part, total, size, _redact(final))
        _stream(ctx, resp, part, length, total if total is not None else size)


# ---------------------------------------------------------------------------------------------
# entry point


def fetch(spec: AssetSpec, dest: str | Path, *, lock: str | Path | None = None, retries: int = 5,
          backoff: float = 2.0, timeout: float = 60.0, log: Callable[[str], None] = print) -> dict:
    """Download spec.url to dest, verified; return the provenance record.

    The record has url, final_url (query string dropped), md5, size, md5_source / size_source
    ('pinned', 'metadata', 'lock' or 'first-use'), metadata_url and the metadata's scalar fields,
    expect, action ('downloaded' or 'existing'), bytes_transferred, retries, seconds and a UTC
    timestamp; it is also written to ``<dest>.provenance.json``. Raises AssetError (one line).
    """
    dest = Path(dest)
    name = os.fspath(dest)
    scheme = urlsplit(spec.url).scheme.lower()
    if scheme not in ("http", "https", "file"):
        raise AssetError(f"{name}: unsupported URL {spec.url!r} (use http://, https:// or file://)")
    ctx = _Ctx(spec, name, retries, backoff, timeout, log)

    md5 = _norm_md5(spec.md5, "pinned", name)
    size = _norm_size(spec.size, "pinned", name)
    sha256 = _norm_sha256(spec.sha256, name)
    md5_src = "pinned" if md5 else None
    size_src = "pinned" if size is not None else None
    meta: dict = {}
    if spec.metadata_url:
        meta = _get_metadata(ctx, spec.metadata_url)
        _check_metadata(name, spec, meta)
        meta_md5 = _norm_md5(meta.get("md5sum"), "metadata", name)
        meta_size = _norm_size(meta.get("file_size"), "metadata", name)
        if md5 is None and meta_md5:
            md5, md5_src = meta_md5, "metadata"
        elif md5 and meta_md5 and md5 != meta_md5:
            log(f"{name}: pinned md5 {md5} differs from metadata md5 {meta_md5}; using the pinned one")
        if size is None and meta_size is not None:
            size, size_src = meta_size, "metadata"
        elif size is not None and meta_size is not None and size != meta_size:
            log(f"{name}: pinned size {size} differs from metadata size {meta_size}; using the pinned one")

    lock_path = Path(lock) if lock is not None else None
    lock_key = None
    if lock_path is not None:
        lock_key = _lock_key(lock_path, dest)
        entry = _read_lock(lock_path, name).get(lock_key)
        if isinstance(entry, dict):
            lmd5 = _norm_md5(entry.get("md5"), "lock", name)
            lsize = _norm_size(entry.get("size"), "lock", name)
            if (md5 and lmd5 and md5 != lmd5) or (size is not None and lsize is not None and size != lsize):
                src = md5_src if md5 and lmd5 and md5 != lmd5 else size_src
                says = f"its metadata {spec.metadata_url} says" if src == "metadata" else "the config pins"
                raise _lock_conflict(name, dest, lock_path, entry, f"{says} md5 {md5}, {_bytes(size)}, "
                                     f"{_redact(spec.url)}")
            if md5 is None and lmd5:
                md5, md5_src = lmd5, "lock"
            if size is None and lsize is not None:
                size, size_src = lsize, "lock"

    record = {
        "dest": name,
        "url": spec.url,
        "metadata_url": spec.metadata_url,
        "metadata": _scalar_fields(meta),
        "expect": dict(spec.expect),
        "md5_source": md5_src or "first-use",
        "size_source": size_src or "first-use",
    }
    if sha256:
        record["sha256"] = sha256
    prov_path = dest.with_name(dest.name + ".provenance.json")

    if dest.exists() or dest.is_symlink():
        if sha256 and dest.is_file() and _sha256_file(dest) != sha256:
            raise AssetError(f"{name}: already exists but its sha256 is {_sha256_file(dest)}, expected {sha256} "
                             f"(pinned); delete it to download again")
        return _existing(ctx, dest, prov_path, md5, size, record, lock_path, lock_key)

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _Part(dest.with_name(dest.name + ".part"), ctx)
    stale = part.path.exists() and part.path.stat().st_size > 0
    state: dict = {"final_url": spec.url, "resumed": False}
    if stale:
        log(f"{name}: resuming from {_mb(part.path.stat().st_size)} already in {part.path.name}")
    else:
        log(f"{name}: downloading {_redact(spec.url)}" + (f" ({_mb(size)})" if size else ""))
    while True:
        ctx.with_retries(spec.url, lambda: _attempt(ctx, spec.url, part, size, state), lambda: part.offset)
        got_md5 = part.hasher.hexdigest() if part.hasher else hashlib.md5().hexdigest()
        got_size = part.offset
        problems = []
        if size is not None and got_size != size:
            problems.append(f"size {got_size} != expected {size} ({size_src})")
        if md5 is not None and got_md5 != md5:
            problems.append(f"md5 {got_md5} != expected {md5} ({md5_src})")
        if not problems and sha256 and (got_sha := _sha256_file(part.path)) != sha256:
            problems.append(f"sha256 {got_sha} != expected {sha256} (pinned)")
        if not problems:
            break
        part.reset()
        if stale:
            # Bytes from an earlier run may have been wrong (e.g. the source changed); retry once clean.
            log(f"{name}: verification failed ({'; '.join(problems)}) after resuming an old .part; starting over")
            stale = False
            continue
        if "lock" in (md5_src, size_src):  # the only expectation is what an earlier download pinned
            raise _lock_conflict(name, dest, lock_path, _read_lock(lock_path, name).get(lock_key, {}),
                                 f"downloaded md5 {got_md5}, {_bytes(got_size)}, {_redact(state['final_url'])} "
                                 f"(.part removed)")
        raise AssetError(f"{name}: verification failed: {'; '.join(problems)}; .part removed "
                         f"({_redact(state['final_url'])})")
    if lock_path is not None:
        _lock_record(lock_path, lock_key, {"md5": got_md5, "size": got_size, "url": spec.url}, name)
        if md5_src is None and sha256:
            log(f"{name}: sha256 {sha256[:12]}… verified; recorded md5 {got_md5} in {lock_path}")
        elif md5_src is None:
            log(f"{name}: no checksum known; recorded md5 {got_md5} in {lock_path} (trust on first use)")
    os.replace(part.path, dest)
    record.update({
        "final_url": _redact(state["final_url"]),
        "md5": got_md5,
        "size": got_size,
        "action": "downloaded",
        "bytes_transferred": ctx.bytes_in,
        "retries": ctx.failures_total,
        "seconds": round(time.monotonic() - ctx.t0, 3),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    _write_json_atomic(prov_path, record)
    rate = ctx.bytes_in / max(record["seconds"], 1e-9) / 1e6
    log(f"{name}: done, {_mb(got_size)} in {record['seconds']:.1f}s ({rate:.1f} MB/s), "
        f"md5 {got_md5} ({record['md5_source']})")
    return record


def _existing(ctx: _Ctx, dest: Path, prov_path: Path, md5: str | None, size: int | None, record: dict,
              lock_path: Path | None, lock_key: str | None) -> dict:
    name = ctx.name
    if not dest.is_file():
        raise AssetError(f"{name}: exists but is not a regular file; remove it to download again")
    actual_size = dest.stat().st_size
    actual_md5 = _md5_file(dest)
    if (size is not None and actual_size != size) or (md5 is not None and actual_md5 != md5):
        if "lock" in (record["md5_source"], record["size_source"]):
            raise _lock_conflict(name, dest, lock_path, _read_lock(lock_path, name).get(lock_key, {}),
                                 f"the file there has md5 {actual_md5}, {_bytes(actual_size)}")
        if size is not None and actual_size != size:
            raise AssetError(f"{name}: already exists but has {actual_size} bytes, expected {size} "
                             f"({record['size_source']}); delete it to download again")
        raise AssetError(f"{name}: already exists but its md5 is {actual_md5}, expected {md5} "
                         f"({record['md5_source']}); delete it to download again")
    if lock_path is not None:
        _lock_record(lock_path, lock_key, {"md5": actual_md5, "size": actual_size, "url": ctx.spec.url}, name)
    try:
        old = json.loads(prov_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        old = None
    if isinstance(old, dict) and old.get("md5") == actual_md5 and old.get("size") == actual_size:
        return old
    if md5 is None:
        ctx.log(f"{name}: exists; no checksum known, accepting it (md5 {actual_md5})")
    record.update({
        "final_url": None,
        "md5": actual_md5,
        "size": actual_size,
        "action": "existing",
        "bytes_transferred": 0,
        "retries": 0,
        "seconds": round(time.monotonic() - ctx.t0, 3),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    _write_json_atomic(prov_path, record)
    return record


if __name__ == "__main__":
    sys.exit(main())

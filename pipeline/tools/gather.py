"""`python -m pipeline data gather URLS.txt --out DIR`: download image URLs into class folders.

Parallel downloads that skip broken links (HTTP errors, timeouts, empty bodies, HTML or other non-image
content, redirects to "photo unavailable" placeholders, files that do not decode), verify each file with
the pipeline's image check before it takes its final name (atomic: no partial files), resume (a URL whose
file exists is not fetched again), retry transient failures, and log failures to DIR/failures.tsv.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import http.client
import os
import re
import ssl
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from pipeline.core import fileio
from pipeline.data import image_files
from pipeline.tools import common
from pipeline.tools.common import DataError

HELP = "download image URLs into class folders"
PLACEHOLDER_WORDS = ("unavailable", "placeholder", "not_found", "notfound", "removed", "missing", "default")
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024
USER_AGENT = "pipeline-data-gather/1.0 (+urllib)"


def add_arguments(parser) -> None:
    """Adds URLS.txt, --out, --workers, --timeout and --retries to the `data gather` sub-parser."""
    parser.add_argument(
        "urls", type=Path, metavar="URLS.txt", help="lines `url` or `url<TAB>class`; blank lines and # comments ignored"
    )
    parser.add_argument("--out", type=Path, required=True, metavar="DIR")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds to wait for the connection and for each read (default 30)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=2,
        metavar="N",
        help="extra attempts after a timeout, HTTP 5xx or connection error (default 2)",
    )


@dataclasses.dataclass
class Job:
    """One usable line of the URL list."""

    url: str
    label: str  # class folder name, or "unlabelled"
    line: int


@dataclasses.dataclass
class Outcome:
    """What became of one job: its file (downloaded or already there) or why it failed."""

    job: Job
    status: str  # "downloaded", "existing", "failed"
    path: Path | None = None
    reason: str | None = None
    warning: str | None = None


class _Failure(Exception):
    def __init__(self, reason: str, transient: bool = False):
        super().__init__(reason)
        self.reason, self.transient = reason, transient


def _clean_class(name: str) -> str:
    name = re.sub(r"[/\\\x00-\x1f\x7f]", "_", name).strip().lstrip(".").strip()
    return name


def read_url_list(path) -> tuple[list[Job], list[Outcome]]:
    """Lines `url` or `url<TAB>class` (or `url class`); blank lines and # comments ignored. Returns the
    jobs (duplicates dropped) and failures for lines that cannot be used (bad scheme, bad class name).

    Raises:
        DataError: the file is missing, not a file, or cannot be read as UTF-8.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read ({error})") from None
    jobs, failures, seen = [], [], set()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "\t" in line:
            url, _, label_name = line.partition("\t")
        else:  # URLs hold no spaces: `url class name` is read as url + class too
            url, _, label_name = line.partition(" ")
        url, label_name = url.strip(), label_name.strip()
        folder = _clean_class(label_name) if label_name else "unlabelled"
        job = Job(url, folder, number)
        if (url, folder) in seen:
            continue
        seen.add((url, folder))
        scheme = urllib.parse.urlsplit(url).scheme.lower()
        if scheme not in ("http", "https"):
            failures.append(Outcome(job, "failed", reason=f"line {number}: not an http(s) URL"))
        elif not folder:
            failures.append(Outcome(job, "failed", reason=f"line {number}: unusable class name {label_name!r}"))
        else:
            jobs.append(job)
    return jobs, failures


def file_stem(url: str) -> str:
    """`<sanitised basename without extension>-<10 hex of sha256(url)>`: readable and collision-free."""
    basename = urllib.parse.unquote(Path(urllib.parse.urlsplit(url).path).name)
    stem = basename.rsplit(".", 1)[0] if "." in basename.lstrip(".") else basename
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_-")[:60] or "image"
    return f"{stem}-{hashlib.sha256(url.encode()).hexdigest()[:10]}"


def _existing(folder: Path, stem: str) -> Path | None:
    for extension in common.FORMAT_EXTENSIONS.values():
        if (folder / f"{stem}{extension}").is_file():
            return folder / f"{stem}{extension}"
    return None


def _is_placeholder_url(url: str) -> bool:
    path = urllib.parse.unquote(urllib.parse.urlsplit(url).path).lower()
    return any(word in path for word in PLACEHOLDER_WORDS)


def _error_text(error) -> str:
    reason = getattr(error, "reason", None) or error
    return fileio.os_reason(reason)


def _fetch(url: str, temporary: Path, timeout: float, opener) -> str:
    """Downloads `url` into `temporary`; returns the final URL (after redirects). Raises _Failure."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "image/*,*/*;q=0.5"})
    try:
        response = opener.open(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        error.close()
        transient = error.code >= 500
        raise _Failure(f"HTTP {error.code} {error.reason}", transient) from None
    except urllib.error.URLError as error:
        if isinstance(error.reason, TimeoutError):
            raise _Failure(f"timed out after {timeout:g} s", True) from None
        if isinstance(error.reason, ssl.SSLError):
            raise _Failure(f"TLS error: {_error_text(error)}") from None
        raise _Failure(f"connection error: {_error_text(error)}", True) from None
    except TimeoutError:
        raise _Failure(f"timed out after {timeout:g} s", True) from None
    except (http.client.HTTPException, OSError) as error:
        raise _Failure(f"connection error: {_error_text(error) or type(error).__name__}", True) from None
    except ValueError as error:
        raise _Failure(f"invalid URL ({error})") from None
    with response:
        final = response.geturl()
        if final != url and _is_placeholder_url(final):
            raise _Failure(f"redirected to a 'photo unavailable' placeholder ({final})")
        length = response.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > MAX_DOWNLOAD_BYTES:
            raise _Failure(f"too large ({int(length)} bytes; the limit is {MAX_DOWNLOAD_BYTES})")
        size = 0
        with open(temporary, "wb") as handle:
            while True:
                try:
                    chunk = response.read(1 << 16)
                except TimeoutError:
                    raise _Failure(f"timed out after {timeout:g} s (while reading)", True) from None
                except (http.client.HTTPException, OSError) as error:
                    raise _Failure(
                        f"connection error while reading: {_error_text(error) or type(error).__name__}", True
                    ) from None
                if not chunk:
                    break
                size += len(chunk)
                if size > MAX_DOWNLOAD_BYTES:
                    raise _Failure(f"too large (over {MAX_DOWNLOAD_BYTES} bytes)")
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
    return final


def _download(job: Job, out: Path, *, timeout: float, retries: int, backoff: float, min_size: int, opener) -> Outcome:
    folder = out / job.label
    stem = file_stem(job.url)
    existing = _existing(folder, stem)
    if existing is not None:
        return Outcome(job, "existing", existing)
    folder.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=folder, prefix=".tmp-gather-", suffix=".part")
    os.close(handle)
    temporary = Path(name)
    try:
        for attempt in range(retries + 1):
            try:
                final = _fetch(job.url, temporary, timeout, opener)
                break
            except _Failure as failure:
                if not failure.transient or attempt == retries:
                    reason = failure.reason + (f" ({attempt + 1} attempts)" if attempt else "")
                    return Outcome(job, "failed", reason=reason)
                time.sleep(backoff * 2**attempt)
        result = image_files.check_image(temporary, min_size=min_size)
        if not result.ok:
            reason = result.reason
            if reason.startswith("empty file"):
                reason = "empty response body"
            return Outcome(job, "failed", reason=reason)
        redirected = final != job.url
        if redirected and result.warning and "placeholder" in result.warning:
            return Outcome(job, "failed", reason=f"redirected ({final}) to a placeholder image ({result.warning})")
        destination = folder / f"{stem}{common.FORMAT_EXTENSIONS[result.format]}"
        os.chmod(temporary, 0o644)  # mkstemp made it private; images are data, readable like any other
        os.replace(temporary, destination)
        return Outcome(job, "downloaded", destination, warning=result.warning)
    finally:
        temporary.unlink(missing_ok=True)


def _remove_stale_temporaries(out: Path, age_s: float = 3600.0) -> None:
    """Temporary files a killed run left behind (hidden, never under a final name)."""
    now = time.time()
    for path in out.glob("*/.tmp-gather-*.part"):
        try:
            if now - path.stat().st_mtime > age_s:
                path.unlink()
        except OSError:
            pass


@dataclasses.dataclass
class GatherSummary:
    """Every outcome, in URL-list order, and the failures file written."""

    outcomes: list[Outcome]
    failures_file: Path

    def count(self, status: str) -> int:
        return sum(outcome.status == status for outcome in self.outcomes)


def gather(
    urls_file,
    out,
    *,
    workers: int = 8,
    timeout: float = 30.0,
    retries: int = 2,
    backoff: float = 0.5,
    min_size: int = 8,
    opener=None,
) -> GatherSummary:
    """Downloads the URLs of `urls_file` into `out/<class or unlabelled>/`, in parallel.

    A URL whose file already exists is skipped without a request (so a rerun resumes). Transient failures
    (timeouts, HTTP 5xx, connection errors) are retried `retries` times with exponential backoff
    (`backoff`, 2x, 4x ... seconds); HTTP 4xx and bad content never are. Each body goes to a hidden
    temporary file in the class folder, must decode (`check_image`), and only then is renamed to its
    final name, `<name>-<url hash>.<sniffed extension>`. Failures are written to out/failures.tsv.

    Raises:
        DataError: unusable URL file, --out not a folder or not writable, or bad workers/retries/timeout.
    """
    jobs, failures = read_url_list(urls_file)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out}: exists and is not a folder")
    if workers < 1 or retries < 0 or timeout <= 0:
        raise DataError(
            f"--workers must be >= 1, --retries >= 0 and --timeout > 0; received {workers}, {retries}, {timeout}"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"--out {out}: cannot create ({fileio.os_reason(error)})") from None
    _remove_stale_temporaries(out)
    opener = opener or urllib.request.build_opener()
    outcomes = list(failures)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers)
    try:
        with image_files.progress_bar(len(jobs), "downloading", unit="URL") as bar:
            futures = [
                pool.submit(
                    _download,
                    job,
                    out,
                    timeout=timeout,
                    retries=retries,
                    backoff=backoff,
                    min_size=min_size,
                    opener=opener,
                )
                for job in jobs
            ]
            for future in concurrent.futures.as_completed(futures):
                future.result()
                bar.update()
        outcomes += [future.result() for future in futures]
    except OSError as error:  # local: disk full, permissions
        pool.shutdown(wait=True, cancel_futures=True)
        raise DataError(f"cannot write under {out} ({fileio.os_reason(error)})") from None
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()
    outcomes.sort(key=lambda outcome: outcome.job.line)
    failures_file = out / "failures.tsv"
    clean = lambda text: re.sub(r"[\t\r\n]+", " ", text)  # noqa: E731
    common.write_lists(
        {
            failures_file: "# url\treason\n"
            + "".join(f"{clean(o.job.url)}\t{clean(o.reason)}\n" for o in outcomes if o.status == "failed")
        }
    )
    return GatherSummary(outcomes, failures_file)


def run(args) -> int:
    """`data gather`: prints failures, warnings and a summary; exit code 1 if any URL failed."""
    summary = gather(args.urls, args.out, workers=args.workers, timeout=args.timeout, retries=args.retries)
    for outcome in summary.outcomes:
        if outcome.status == "failed":
            print(f"failed: {outcome.job.url}: {outcome.reason}")
        elif outcome.warning:
            print(f"warning: {outcome.job.url} -> {outcome.path}: {outcome.warning}")
    failed = summary.count("failed")
    print(
        f"{len(summary.outcomes)} URLs: {summary.count('downloaded')} downloaded, "
        f"{summary.count('existing')} skipped (already present), {failed} failed"
        + (f" (listed in {summary.failures_file})" if failed else "")
    )
    return 1 if failed else 0

"""Fetching weights (``grefine weights fetch``): Hugging Face repositories into the hub cache
(the hub resumes interrupted downloads itself), URL files into their folder (continued from a
``.part`` file with an HTTP range request, sha256-checked, then moved into place). A local mirror
(``$GREFINE_WEIGHTS_MIRROR``) replaces every remote source with a copy from disk, written in the
same layout, so loaders cannot tell the difference.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from grefine_core.app.fingerprint import sha256_file
from grefine_core.app.weights import Say, Weight, matching, mirror_dir
from grefine_core.errors import InputError, MissingWeightsError

#: Seconds to wait for the first answer of a remote host (one try per host and process).
PROBE_TIMEOUT_S = 5.0


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def probe(url: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """One HEAD request to ``url``'s host (through the proxies the environment names), so that
    an offline machine fails at once rather than after the libraries' retries. Each host is asked
    once per process, whatever the answer.

    :raises MissingWeightsError: no answer at all (an HTTP error status is an answer).
    """
    parts = urllib.parse.urlsplit(url)
    problem = _probe(f"{parts.scheme}://{parts.netloc}/", timeout)
    if problem:
        raise MissingWeightsError(
            f"cannot reach {parts.netloc or url} ({problem}); fetch the weights on a machine "
            "that can and copy the caches, or point $GREFINE_WEIGHTS_MIRROR at a local copy "
            "(docs/weights.md)"
        )


@functools.cache
def _probe(root: str, timeout: float) -> str:
    try:
        urllib.request.urlopen(urllib.request.Request(root, method="HEAD"), timeout=timeout)  # noqa: S310
    except urllib.error.HTTPError:
        return ""  # the host answered
    except (OSError, ValueError) as e:
        return _first_line(e)
    return ""


def hub_endpoint() -> str:
    """The Hugging Face endpoint the hub library will use (``$HF_ENDPOINT`` or the public one)."""
    return os.environ.get("HF_ENDPOINT", "").strip() or "https://huggingface.co"


def _hf_cache(weight: Weight) -> Path:
    from grefine_core.hub import hub_cache_dir

    return Path(weight.target).expanduser() if weight.target else hub_cache_dir()


def _patterns(weight: Weight) -> list[str]:
    return list(weight.files) or ["*"]


def fetch_hf_from_mirror(weight: Weight, mirror: Path) -> Path:
    """Copy ``<mirror>/hf/<repo>/`` (the files matching the weight's patterns) into the hub
    cache layout: ``models--org--name/snapshots/<commit>/`` and ``refs/main``. The commit is a
    digest of the copied files' names and sizes."""
    repo = weight.repo or ""
    source = mirror / "hf" / repo
    files = matching(source, _patterns(weight)) if source.is_dir() else []
    if not files:
        raise MissingWeightsError(
            f"{weight.name}: the mirror {mirror} has no files of {repo} matching "
            f"{', '.join(_patterns(weight))} (expected under {source})"
        )
    h = hashlib.sha1()  # noqa: S324 - a folder name in the hub's 40-hex format, not security
    for f in files:
        h.update(f"{f.relative_to(source).as_posix()}:{f.stat().st_size};".encode())
    commit = h.hexdigest()
    repo_dir = _hf_cache(weight) / f"models--{repo.replace('/', '--')}"
    repo_dir.mkdir(parents=True, exist_ok=True)
    snapshot = repo_dir / "snapshots" / commit
    staging = Path(tempfile.mkdtemp(prefix=".grefine-fetch-", dir=repo_dir))
    try:
        for f in files:
            dest = staging / f.relative_to(source)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dest)
        if snapshot.exists():
            shutil.rmtree(snapshot)
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(snapshot)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit, encoding="utf-8")
    return snapshot


def fetch_hf(weight: Weight) -> Path:
    """Download the repository's matching files into the hub cache (an interrupted download is
    continued by the next fetch: the hub keeps its partial files)."""
    from huggingface_hub import snapshot_download

    probe(hub_endpoint())
    try:
        folder = snapshot_download(
            weight.repo, allow_patterns=_patterns(weight), cache_dir=str(_hf_cache(weight))
        )
    except Exception as e:  # noqa: BLE001 - network, auth (gated repos), disk: all one line
        gated = "Gated" in type(e).__name__ or "401" in str(e) or "403" in str(e)
        advice = (
            f"accept the licence on {hub_endpoint()}/{weight.repo} and log in (`hf auth login`)"
            if gated
            else f"by hand: {weight.fetch_hint()}"
        )
        raise MissingWeightsError(
            f"{weight.name}: downloading {weight.repo} failed ({_first_line(e)}); {advice}"
        ) from None
    return Path(folder)


def _url_source(base: str, name: str, mirror: Path | None) -> str | Path:
    url = f"{base.rstrip('/')}/{name}"
    if mirror is None:
        return url
    parts = urllib.parse.urlsplit(url)
    return mirror / "url" / parts.netloc / parts.path.lstrip("/")


def download(source: str | Path, part: Path) -> None:
    """Copy or download ``source`` into ``part``, continuing a partial ``part`` (an HTTP range
    request; a server that ignores it sends the whole file, which replaces the part)."""
    if isinstance(source, Path):
        if not source.is_file():
            raise MissingWeightsError(f"the mirror has no {source}")
        shutil.copyfile(source, part)
        return
    done = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(source, headers={"Range": f"bytes={done}-"} if done else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:  # noqa: S310 - http(s) only
            mode = "ab" if done and resp.status == 206 else "wb"
            with open(part, mode) as out:
                shutil.copyfileobj(resp, out, 1 << 20)
    except urllib.error.HTTPError as e:
        if e.code == 416 and done:  # the part is already whole: the sha256 check decides
            return
        raise MissingWeightsError(f"downloading {source} failed ({_first_line(e)})") from None
    except OSError as e:
        raise MissingWeightsError(
            f"downloading {source} failed ({_first_line(e)}); run the fetch again to continue"
        ) from None


def fetch_urls(weight: Weight, mirror: Path | None) -> Path:
    """Each file of a URL source into ``target``: ``<file>.part`` first (continued by the next
    fetch), its sha256 checked, then moved into place."""
    target = Path(weight.target).expanduser()
    target.mkdir(parents=True, exist_ok=True)
    if mirror is None:
        probe(weight.source)
    for name, sha in weight.files.items():
        dest = target / name
        if dest.is_file() and (not sha or sha256_file(dest) == sha):
            continue
        part = dest.with_name(dest.name + ".part")
        download(_url_source(weight.source, name, mirror), part)
        digest = sha256_file(part)
        if sha and digest != sha:
            part.unlink(missing_ok=True)
            raise InputError(
                f"{weight.name}: {name} has sha256 {digest}, the publisher's is {sha}; the "
                "download was removed (run the fetch again)"
            )
        part.replace(dest)
    return target


def fetch(weight: Weight, say: Say = print) -> Path:
    """Fetch one weight (from ``$GREFINE_WEIGHTS_MIRROR`` when set) and return where it is."""
    mirror = mirror_dir()
    say(f"fetching {weight.name} from {mirror or weight.source}")
    if weight.repo:
        return fetch_hf_from_mirror(weight, mirror) if mirror else fetch_hf(weight)
    return fetch_urls(weight, mirror)

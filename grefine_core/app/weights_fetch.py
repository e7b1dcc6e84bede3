"""Fetching weights (``grefine weights fetch``): Hugging Face repositories into the hub cache,
URL files into their folder (resumed from a ``.part`` file, sha256-checked, then moved into
place), archives unpacked. A local mirror (``$GREFINE_WEIGHTS_MIRROR``) replaces every remote
source with a copy from disk, written in the same layout, so loaders cannot tell the difference.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import tempfile
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

from grefine_core.app.fingerprint import sha256_file
from grefine_core.app.weights import Weight, matching, mirror_dir
from grefine_core.errors import InputError, MissingWeightsError

Say = Callable[[str], None]
#: Seconds to wait for the first answer of a remote host (one try).
PROBE_TIMEOUT_S = 5.0


def probe(host: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """One connection attempt to ``host:443``, so that an offline machine fails at once.

    :raises MissingWeightsError: the host cannot be reached.
    """
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError as e:
        raise MissingWeightsError(
            f"cannot reach {host} ({e}); fetch the weights on a machine that can and copy the "
            f"caches, or point $GREFINE_WEIGHTS_MIRROR at a local copy (docs/weights.md)"
        ) from None


def _hf_cache(weight: Weight) -> Path:
    from grefine_core.hub import hub_cache_dir

    own = weight.target and not weight.unpack  # an unpacked archive's target is its folder
    return Path(weight.target).expanduser() if own else hub_cache_dir()


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
    snapshot = repo_dir / "snapshots" / commit
    staging = Path(tempfile.mkdtemp(prefix=".grefine-fetch-", dir=_ensure(repo_dir)))
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


def _ensure(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def fetch_hf(weight: Weight) -> Path:
    """Download the repository's matching files into the hub cache (resumable: the hub keeps
    partial downloads and continues them)."""
    from huggingface_hub import snapshot_download

    probe("huggingface.co")
    try:
        folder = snapshot_download(
            weight.repo,
            allow_patterns=_patterns(weight),
            cache_dir=str(_hf_cache(weight)),
        )
    except Exception as e:  # noqa: BLE001 - network, auth (gated repos), disk: all one message
        raise MissingWeightsError(
            f"{weight.name}: downloading {weight.repo} failed ({type(e).__name__}: {e}); "
            f"by hand: {weight.fetch_hint()}"
        ) from None
    return Path(folder)


def _url_source(base: str, name: str, mirror: Path | None) -> str | Path:
    url = f"{base.rstrip('/')}/{name}"
    if mirror is None:
        return url
    parts = urllib.parse.urlsplit(url)
    return mirror / "url" / parts.netloc / parts.path.lstrip("/")


def _download(source: str | Path, part: Path) -> None:
    """Copy or download ``source`` into ``part``, continuing a partial ``part``."""
    if isinstance(source, Path):
        if not source.is_file():
            raise MissingWeightsError(f"the mirror has no {source}")
        shutil.copyfile(source, part)
        return
    done = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(source, headers={"Range": f"bytes={done}-"} if done else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:  # noqa: S310 - https only
            mode = "ab" if done and resp.status == 206 else "wb"
            with open(part, mode) as out:
                shutil.copyfileobj(resp, out, 1 << 20)
    except OSError as e:
        raise MissingWeightsError(
            f"downloading {source} failed ({e}); run the fetch again to continue"
        ) from None


def fetch_urls(weight: Weight, mirror: Path | None) -> Path:
    """Each file of a URL source into ``target``: ``<file>.part`` first (continued by the next
    fetch), its sha256 checked, then moved into place."""
    target = _ensure(Path(weight.target).expanduser())
    if mirror is None:
        probe(urllib.parse.urlsplit(weight.source).netloc)
    for name, sha in weight.files.items():
        dest = target / name
        if dest.is_file() and (not sha or sha256_file(dest) == sha):
            continue
        part = dest.with_name(dest.name + ".part")
        _download(_url_source(weight.source, name, mirror), part)
        digest = sha256_file(part)
        if sha and digest != sha:
            part.unlink(missing_ok=True)
            raise InputError(
                f"{weight.name}: {name} has sha256 {digest}, the publisher's is {sha}; the "
                "download was removed (run the fetch again)"
            )
        part.replace(dest)
    return target


def unpack(weight: Weight, archives: list[Path]) -> Path:
    """Extract the zip ``archives`` and move the shallowest folder holding every name of
    ``weight.contains`` to ``weight.target`` (so the archive's own layout does not matter)."""
    target = Path(weight.target).expanduser()
    _ensure(target.parent)
    staging = Path(tempfile.mkdtemp(prefix=".grefine-unpack-", dir=target.parent))
    try:
        for archive in archives:
            with zipfile.ZipFile(archive) as zf:
                for member in zf.namelist():  # no absolute paths, no "..": stay in staging
                    if member.startswith("/") or ".." in Path(member).parts:
                        raise InputError(f"{archive}: unsafe path {member!r} in the archive")
                zf.extractall(staging)
        found = sorted(
            (d for d in [staging, *staging.rglob("*")] if d.is_dir()),
            key=lambda d: len(d.parts),
        )
        home = next((d for d in found if all((d / n).exists() for n in weight.contains)), None)
        if home is None:
            raise InputError(
                f"{weight.name}: no folder in {', '.join(a.name for a in archives)} holds "
                f"{', '.join(weight.contains)}"
            )
        if target.exists():
            shutil.rmtree(target)
        home.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def fetch(weight: Weight, say: Say = print) -> Path:
    """Fetch one weight (from ``$GREFINE_WEIGHTS_MIRROR`` when set) and return where it is."""
    mirror = mirror_dir()
    say(f"fetching {weight.name} from {mirror or weight.source}")
    if weight.repo:
        folder = fetch_hf_from_mirror(weight, mirror) if mirror else fetch_hf(weight)
        if weight.unpack:
            return unpack(weight, matching(folder, _patterns(weight)))
        return folder
    if weight.unpack:
        holder = Weight(**{**weight.__dict__, "target": str(Path(weight.target).parent)})
        folder = fetch_urls(holder, mirror)
        return unpack(weight, [folder / name for name in weight.files])
    return fetch_urls(weight, mirror)

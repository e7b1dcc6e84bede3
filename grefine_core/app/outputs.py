"""One item's outputs on disk: written whole or not at all, trusted only when they vouch for
themselves, and never at the cost of a file grefine did not write. docs/outputs.md tells the story.

Layout (unchanged): ``<stem>.png``, ``<stem>.json``, ``<stem>_maps/``. Order: everything is
written into a staging folder of our own (``.grefine-stage.<stem>.<random>``, holding a marker
file), then the maps folder, the image and, **last**, the JSON report are moved into place. The
report is the commit marker: it carries the run fingerprint and the sha256 of every file it
vouches for, and an item counts as done only when the report's fingerprint is the one asked for
and every hash matches (this works on object stores too, which have no atomic folder rename). A
crash at any step leaves either the old complete item, or files that no report vouches for
(recomputed on the next run), plus a staging folder that the next run removes.

A lock file (``.grefine.lock``, taken before any model loads) makes a second writer on the same
folder refuse, naming the holder's process id. grefine replaces or deletes only files it can prove
it wrote: its marker in a staging or maps folder, its text chunk in a PNG, its keys in a report.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from grefine_core.app.fingerprint import Fingerprint, sha256_file
from grefine_core.atomic import ensure_writable_dir
from grefine_core.errors import OutputError, OutputInTheWayError

log = logging.getLogger(__name__)

STAGE_PREFIX = ".grefine-stage."
STAGE_MARKER = ".grefine-staging"
MAPS_MARKER = ".grefine-maps"
LOCK_NAME = ".grefine.lock"
#: PNG text key that marks an image grefine wrote (its value: the item's report file name).
PNG_KEY = "grefine"
#: ``GREFINE_CRASH_AT=<step>[:<n>]`` kills the process the n-th time (default 1) it reaches that
#: publishing step (crash tests); the Ray engine's driver has one more, ``ray-outcome``.
CRASH_ENV = "GREFINE_CRASH_AT"
CRASH_STEPS = ("staged", "maps", "image", "json")
_crash_counts: dict[str, int] = {}
#: Files of a maps folder written by grefine versions before the marker existed (they wrote no
#: ``maps.npz``). Newer folders list their files in the marker, whatever ``output.maps`` was,
#: and a rerun replaces the whole folder: no ``.npy`` or ``maps.npz`` of another format stays.
_OLD_MAP_SUFFIXES = (".npy", "_overlay.png", ".png")


def crash_point(step: str) -> None:
    """Kill this process with SIGKILL when ``$GREFINE_CRASH_AT`` names ``step`` (a test hook:
    a real crash at exactly that point, not a timed ``kill -9``)."""
    name, _, nth = os.environ.get(CRASH_ENV, "").partition(":")
    if name != step:
        return
    _crash_counts[step] = _crash_counts.get(step, 0) + 1
    if _crash_counts[step] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def item_paths(out: Path, stem: str) -> dict[str, Path]:
    return {
        "image": out / f"{stem}.png",
        "json": out / f"{stem}.json",
        "maps": out / f"{stem}_maps",
    }


# --------------------------------------------------------------------------- proof of ownership


def read_report(path: Path) -> dict[str, Any] | None:
    """The report at ``path`` when it is a grefine report, else ``None``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and ("fingerprint" in data or {"item", "trace"} <= set(data)):
        return data
    return None


def _vouched(out: Path, path: Path, report: dict[str, Any] | None) -> bool:
    """True when ``report`` lists ``path`` with its current sha256."""
    digest = (report or {}).get("files", {}).get(path.relative_to(out).as_posix())
    try:
        return digest is not None and sha256_file(path) == digest
    except OSError:
        return False


def _png_is_ours(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return PNG_KEY in getattr(im, "text", {})
    except OSError:
        return False


def _foreign_in_maps(maps: Path, report: dict[str, Any] | None) -> list[str]:
    """Files in a maps folder that grefine cannot prove it wrote: not listed in the folder's
    marker, nor (older versions, no marker) in the report beside it or named as grefine names
    its maps."""
    marker = maps / MAPS_MARKER
    listed: set[str] = set()
    old_format = False
    if marker.is_file():
        try:
            listed = set(json.loads(marker.read_text(encoding="utf-8")).get("files", []))
        except (OSError, ValueError, AttributeError):
            listed = set()
    elif report is not None:
        prefix = f"{maps.name}/"
        listed = {k[len(prefix) :] for k in report.get("files", {}) if k.startswith(prefix)}
        old_format = "files" not in report
    foreign = []
    for p in sorted(maps.rglob("*")):
        if p.is_dir() or p == marker:
            continue
        rel = p.relative_to(maps).as_posix()
        if rel in listed or (
            old_format and p.parent == maps and p.name.endswith(_OLD_MAP_SUFFIXES)
        ):
            continue
        foreign.append(f"{maps.name}/{rel}")
    return foreign


def check_replaceable(out: Path, stem: str) -> None:
    """Refuse to replace any existing output of ``stem`` that grefine cannot prove it wrote.

    :raises OutputError: naming the file and what to do.
    """
    paths = item_paths(out, stem)
    report = read_report(paths["json"]) if paths["json"].exists() else None
    if paths["json"].exists() and report is None:
        raise OutputInTheWayError(
            f"refusing to replace {str(paths['json'])!r}: it is not a grefine report; move it "
            "away or choose another --out folder"
        )
    image = paths["image"]
    if image.exists() and not (_png_is_ours(image) or _vouched(out, image, report)):
        raise OutputInTheWayError(
            f"refusing to replace {str(image)!r}: grefine did not write it; move it away or "
            "choose another --out folder"
        )
    maps = paths["maps"]
    if maps.exists() or maps.is_symlink():
        if maps.is_symlink() or not maps.is_dir():
            raise OutputInTheWayError(
                f"refusing to replace {str(maps)!r}: it is not a plain folder"
            )
        foreign = _foreign_in_maps(maps, report)
        if foreign:
            raise OutputInTheWayError(
                f"refusing to replace {str(maps)!r}: it holds {foreign[0]!r}, which grefine did "
                "not write; move it away or choose another --out folder"
            )


# --------------------------------------------------------------------------- trust (resume)


def verify_item(out: Path, stem: str, fingerprint: Fingerprint) -> tuple[bool, str]:
    """Whether the item's outputs are a finished result of ``fingerprint``: ``(ok, why not)``."""
    path = item_paths(out, stem)["json"]
    if not path.is_file():
        return False, "no report yet"
    report = read_report(path)
    if report is None:
        return False, f"{path.name} is unreadable or not a grefine report"
    old = report.get("fingerprint")
    if not isinstance(old, dict):
        return False, "its report has no fingerprint (written by an older grefine)"
    if old.get("digest") != fingerprint.digest:
        return False, "changed: " + "; ".join(fingerprint.changes(Fingerprint.from_dict(old)))
    files = report.get("files")
    if not isinstance(files, dict) or not files:
        return False, "its report vouches for no files"
    for rel, digest in sorted(files.items()):
        target = out / rel
        if not target.is_file():
            return False, f"{rel} is missing"
        if sha256_file(target) != digest:
            return False, f"{rel} differs from what its report vouches for"
    return True, ""


# --------------------------------------------------------------------------- publishing


def _hash_tree(stage: Path, names: dict[Path, str]) -> dict[str, str]:
    """``{final relative path: sha256}`` of the staged files (``names`` maps staged -> final)."""
    hashes: dict[str, str] = {}
    for staged, final_rel in names.items():
        if staged.is_dir():
            for p in sorted(staged.rglob("*")):
                if p.is_file() and p.name != MAPS_MARKER:
                    hashes[f"{final_rel}/{p.relative_to(staged).as_posix()}"] = sha256_file(p)
        else:
            hashes[final_rel] = sha256_file(staged)
    return hashes


def publish_item(
    out: Path,
    stem: str,
    write_image: Callable[[Path], None],
    write_maps: Callable[[Path], None] | None,
    report: dict[str, Any],
) -> dict[str, Path]:
    """Write one item: image and maps staged, hashed into ``report["files"]``, then moved into
    place in the order maps, image, report (see the module).

    :param write_image: writes the PNG to the given path.
    :param write_maps: fills the given (existing) folder, or ``None`` for no maps.
    :param report: the JSON report (``files`` is added).
    :returns: the final paths by kind.
    :raises OutputError: a target grefine did not write, an unwritable folder, a full disk.
    """
    ensure_writable_dir(out)
    check_replaceable(out, stem)
    final = item_paths(out, stem)
    try:
        stage = Path(tempfile.mkdtemp(prefix=f"{STAGE_PREFIX}{stem}.", dir=out))
    except OSError as e:
        raise OutputError(f"cannot write in {str(out)!r}: {_reason(e)}") from None
    try:
        (stage / STAGE_MARKER).write_text(str(os.getpid()), encoding="utf-8")
        write_image(stage / "image.png")
        staged = {stage / "image.png": final["image"].name}
        if write_maps is not None:
            maps = stage / "maps"
            maps.mkdir()
            write_maps(maps)
            written = sorted(p.relative_to(maps).as_posix() for p in maps.rglob("*") if p.is_file())
            marker = {"item": stem, "files": written}
            (maps / MAPS_MARKER).write_text(json.dumps(marker), encoding="utf-8")
            staged[maps] = final["maps"].name
        report = {**report, "files": _hash_tree(stage, staged)}
        text = json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False)
        (stage / "report.json").write_text(text, encoding="utf-8")
        crash_point("staged")
        if final["maps"].exists():  # ours (checked above): goes with the staging folder
            os.replace(final["maps"], stage / "previous_maps")
        if write_maps is not None:
            os.replace(stage / "maps", final["maps"])
        crash_point("maps")
        os.replace(stage / "image.png", final["image"])
        crash_point("image")
        os.replace(stage / "report.json", final["json"])
        crash_point("json")
    except OSError as e:
        shutil.rmtree(stage, ignore_errors=True)
        raise OutputError(f"writing {stem!r} to {str(out)!r} failed: {_reason(e)}") from None
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    shutil.rmtree(stage, ignore_errors=True)
    if write_maps is None:
        final.pop("maps")
    return final


def _reason(e: OSError) -> str:
    # PIL reports a short write as "4096 requested and 2016 written", without an errno.
    if e.errno == errno.ENOSPC or ("requested and" in str(e) and "written" in str(e)):
        return "the disk is full (free some space and rerun: finished items are kept)"
    if e.errno == errno.EDQUOT:
        return "the disk quota is exceeded"
    return e.strerror or str(e)


_LEGACY_STAGE = re.compile(r"^\.(?P<stem>.+)\.[a-z0-9_]{8}\.tmp$")  # tempfile.mkdtemp's names


def _legacy_stage(p: Path, stems: set[str]) -> bool:
    """A staging folder of a grefine before the marker: ``.<stem>.<8 random>.tmp`` of an item of
    this batch, holding nothing but ``image.png``, ``report.json`` and ``maps/`` of .npy/.png."""
    m = _LEGACY_STAGE.match(p.name)
    if m is None or m.group("stem") not in stems:
        return False
    entries = {c.name: c for c in p.iterdir()}
    if not entries or not set(entries) <= {"image.png", "report.json", "maps"}:
        return False
    maps = entries.get("maps")
    if maps is not None:
        if not maps.is_dir() or any(
            c.is_dir() or not c.name.endswith((".npy", ".png")) for c in maps.iterdir()
        ):
            return False
    return all(entries[n].is_file() for n in ("image.png", "report.json") if n in entries)


def clean_stale_staging(out: Path, stems: Sequence[str] = ()) -> list[Path]:
    """Remove staging folders that grefine left behind (a crash): ours carry the marker file;
    those of older grefine versions are recognised by name (``.<stem>.<random>.tmp`` for a
    ``stem`` of this batch) and content. Call it while holding the folder's lock."""
    removed = []
    if not out.is_dir():
        return removed
    known = set(stems)
    for p in out.iterdir():
        if not p.is_dir() or p.is_symlink() or not p.name.startswith("."):
            continue
        ours = p.name.startswith(STAGE_PREFIX) and (p / STAGE_MARKER).is_file()
        if ours or _legacy_stage(p, known):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    if removed:
        log.info("removed %d staging folder(s) left by an interrupted run in %s", len(removed), out)
    return removed


# --------------------------------------------------------------------------- the writer lock

_held: dict[str, tuple[int, Any]] = {}
_held_lock = threading.Lock()


@contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Hold ``out/.grefine.lock`` (re-entrant in this process and thread-safe).

    :raises OutputError: another process or thread holds it (the message names the process id).
    """
    ensure_writable_dir(out)
    key = str(out.resolve())
    me = threading.get_ident()
    with _held_lock:
        holder = _held.get(key)
        if holder is not None and holder[0] == me:
            _held[key] = (me, holder[1])
            reentrant = True
        else:
            reentrant = False
    if reentrant:
        yield
        return
    path = out / LOCK_NAME
    fh = _lock_file(path, out)
    with _held_lock:
        if key in _held:  # another thread of this process holds it
            fh.close()
            raise OutputInTheWayError(
                f"output folder {str(out)!r} is being written by another grefine (process "
                f"{os.getpid()}, another thread); wait for it or choose another --out folder"
            )
        _held[key] = (me, fh)
    try:
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield
    finally:
        with _held_lock:
            _held.pop(key, None)
        try:
            path.unlink()  # still locked: a newcomer either fails or sees the file gone
        except OSError:
            pass
        fh.close()


def _lock_file(path: Path, out: Path) -> Any:
    """Open and flock ``path``; retry when it was replaced between the open and the lock (its
    holder removes it on release)."""
    import fcntl

    for _ in range(10):
        try:
            fh = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held until released
        except FileNotFoundError:  # the folder was just removed by a run that wrote nothing
            ensure_writable_dir(out)
            continue
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            pid = fh.read().strip() or "unknown"
            fh.close()
            raise OutputInTheWayError(
                f"output folder {str(out)!r} is being written by another grefine (process "
                f"{pid}, lock file {str(path)!r}); wait for it to finish or choose another --out "
                "folder"
            ) from None
        try:
            same = os.fstat(fh.fileno()).st_ino == os.stat(path).st_ino
        except OSError:
            same = False
        if same:
            return fh
        fh.close()
    raise OutputError(f"cannot lock output folder {str(out)!r}: its lock file keeps changing")

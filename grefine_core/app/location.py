"""Where a batch writes: a local folder, or any pyarrow filesystem URI (``s3://``, ``gs://``,
``file://``...). docs/scale-out.md says what each guarantees.

A local folder gets the full rules of :mod:`grefine_core.app.outputs` (a lock, staging folders,
atomic renames). A URI is treated as an object store, which has neither locks nor renames: each
file is one whole-object write, an item is staged in a local temporary folder, its files are
uploaded maps first, then the image, and the report **last**, so that a crash at any point leaves
the old report (whose hashes no longer match: the item is recomputed) or the new, complete one.
There is no lock: one writer per prefix is the user's to ensure.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from grefine_core.app.outputs import MAPS_MARKER, item_paths, publish_item, read_report
from grefine_core.errors import OutputError, OutputInTheWayError, UsageError

#: pyarrow filesystems with no real folders (writing a key needs no parent).
OBJECT_STORES = ("s3", "gcs")


def is_uri(out: Any) -> bool:
    """True for ``scheme://...`` (a pyarrow filesystem URI), False for a local path."""
    return isinstance(out, str) and "://" in out


class ArrowPath:
    """The little of :class:`pathlib.Path` that resume and publishing use, over a pyarrow
    filesystem: ``/``, ``name``, ``is_file()``, ``read_text()``, ``open("rb")``."""

    def __init__(self, fs: Any, path: str, uri: str) -> None:
        self.fs, self.path, self.uri = fs, path.rstrip("/"), uri.rstrip("/")

    def __truediv__(self, name: str) -> ArrowPath:
        return ArrowPath(self.fs, f"{self.path}/{name}", f"{self.uri}/{name}")

    def __str__(self) -> str:
        return self.uri

    def __repr__(self) -> str:
        return f"ArrowPath({self.uri!r})"

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    def _type(self) -> Any:
        return self.fs.get_file_info(self.path).type

    def is_file(self) -> bool:
        from pyarrow.fs import FileType

        return self._type() == FileType.File

    def exists(self) -> bool:
        from pyarrow.fs import FileType

        return self._type() != FileType.NotFound

    def files(self) -> list[str]:
        """Relative paths of every file below this folder (none when it does not exist)."""
        from pyarrow.fs import FileSelector, FileType

        found = self.fs.get_file_info(FileSelector(self.path, allow_not_found=True, recursive=True))
        return sorted(i.path[len(self.path) + 1 :] for i in found if i.type == FileType.File)

    def open(self, mode: str = "rb") -> Any:
        if mode != "rb":
            raise ValueError(f"ArrowPath.open: only 'rb', got {mode!r}")
        return self.fs.open_input_stream(self.path)

    def read_text(self, encoding: str = "utf-8") -> str:
        with self.open() as fh:
            return fh.read().decode(encoding)

    def upload(self, local: Path) -> None:
        """Write the local file ``local`` here as one object."""
        if self.fs.type_name not in OBJECT_STORES:  # a hierarchical one needs its folders
            self.fs.create_dir(self.path.rsplit("/", 1)[0], recursive=True)
        with local.open("rb") as src, self.fs.open_output_stream(self.path) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)

    def delete(self) -> None:
        self.fs.delete_file(self.path)


def output_target(out: str | Path | ArrowPath) -> Path | ArrowPath:
    """The local folder (a path or a ``file://`` URI), or the :class:`ArrowPath` of any other
    URI (an object store: ``s3://``, ``gs://``...); an :class:`ArrowPath` is taken as it is.

    :raises UsageError: a URI whose scheme pyarrow does not know (or whose filesystem extra,
        e.g. S3 support, is missing).
    """
    if isinstance(out, ArrowPath):
        return out
    if not is_uri(out):
        return Path(out)
    if str(out).startswith("file://"):  # a local folder: the full local rules (lock, renames)
        return Path(str(out)[len("file://") :])
    try:
        from pyarrow.fs import FileSystem
    except ImportError:
        raise UsageError(
            f"--out {out}: writing to a URI needs pyarrow (pip install 'grefine[ray]')"
        ) from None
    try:
        fs, path = FileSystem.from_uri(str(out))
    except (ValueError, OSError) as e:
        raise UsageError(
            f"--out {out}: not a filesystem pyarrow can open ({e}); give a local folder or an "
            "s3://, gs://, hdfs:// or file:// URI"
        ) from None
    return ArrowPath(fs, path, str(out))


def publish_to(
    target: Path | ArrowPath,
    stem: str,
    write_image: Any,
    write_maps: Any,
    report: dict[str, Any],
) -> dict[str, Any]:
    """Publish one item at ``target`` (:func:`~grefine_core.app.outputs.publish_item` locally,
    :func:`publish_remote` at a URI). The caller holds a local folder's lock."""
    if isinstance(target, Path):
        return publish_item(target, stem, write_image, write_maps, report)
    return publish_remote(target, stem, write_image, write_maps, report)


def publish_remote(
    target: ArrowPath, stem: str, write_image: Any, write_maps: Any, report: dict[str, Any]
) -> dict[str, Any]:
    """Stage the item locally, then upload maps, image and report, in that order.

    :raises OutputInTheWayError: an object grefine cannot prove it wrote is in the way.
    :raises OutputError: an upload failed.
    """
    old = _check_replaceable(target, stem)
    with tempfile.TemporaryDirectory(prefix="grefine-upload-") as tmp:
        local = publish_item(Path(tmp), stem, write_image, write_maps, report)
        final = item_paths(target, stem)
        try:
            new_maps = _local_files(local.get("maps"))
            ours = {
                rel[len(stem) + 6 :]
                for rel in old.get("files", {})
                if rel.startswith(f"{stem}_maps/")
            }
            ours |= _marker_files(final["maps"])  # an interrupted upload's files too
            for rel in sorted(ours - set(new_maps)):
                if (final["maps"] / rel).exists():
                    (final["maps"] / rel).delete()
            marker = final["maps"] / MAPS_MARKER
            if not new_maps and marker.exists():
                marker.delete()
            for rel in new_maps:
                (final["maps"] / rel).upload(local["maps"] / rel)
            final["image"].upload(local["image"])
            final["json"].upload(local["json"])  # last: the commit marker
        except OSError as e:
            raise OutputError(f"uploading {stem!r} to {target} failed: {e}") from None
    if "maps" not in local:
        final.pop("maps")
    return final


def _local_files(folder: Path | None) -> list[str]:
    if folder is None:
        return []
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _check_replaceable(target: ArrowPath, stem: str) -> dict[str, Any]:
    """The old report (``{}`` when none); refuse objects no grefine report vouches for."""
    from grefine_core.app.fingerprint import sha256_file

    paths = item_paths(target, stem)
    report: dict[str, Any] = {}
    if paths["json"].exists():
        found = read_report(paths["json"])
        if found is None:
            raise OutputInTheWayError(
                f"refusing to replace {paths['json']}: it is not a grefine report; move it away "
                "or choose another --out prefix"
            )
        report = found
    vouched = report.get("files", {})
    candidates = [(paths["image"].name, paths["image"])]
    listed = _marker_files(paths["maps"])  # ours by name, as in a local maps folder
    candidates += [
        (f"{stem}_maps/{rel}", paths["maps"] / rel)
        for rel in paths["maps"].files()
        if rel != MAPS_MARKER and rel not in listed
    ]
    for rel, path in candidates:
        if path.exists() and vouched.get(rel) != sha256_file(path) and not _ours_png(path):
            raise OutputInTheWayError(
                f"refusing to replace {path}: grefine did not write it (no report vouches for "
                "it); move it away or choose another --out prefix"
            )
    return report


def _marker_files(maps: ArrowPath) -> set[str]:
    import json

    try:
        return set(json.loads((maps / MAPS_MARKER).read_text()).get("files", []))
    except (OSError, ValueError, AttributeError):
        return set()


def _ours_png(path: ArrowPath) -> bool:
    import io

    from PIL import Image

    from grefine_core.app.outputs import PNG_KEY

    try:
        with path.open() as fh, Image.open(io.BytesIO(fh.read())) as im:
            return PNG_KEY in getattr(im, "text", {})
    except OSError:
        return False

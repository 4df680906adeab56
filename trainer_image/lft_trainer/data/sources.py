"""Finding and reading the dataset: JSON Lines / JSON / Parquet files (local or any fsspec URI) or a
Hugging Face dataset id.

Rows are read here with their 1-based position (the line number for JSON Lines), so pre-flight can
name the exact row of a bad input; pre-flight (preflight.py, formats.py) decides what a good row is and
writes the normalized rows to an Arrow file per split (RowWriter). Training reads those files, whatever
the dataset's size: what was checked is what is trained, in the same numbering.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from lft_api.conditions import Reason
from lft_api.spec import DatasetSpec, StorageSpec

from ..errors import InvalidInput
from ..storage.filesystems import split_uri

DATA_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet"}


class BadRow:
    """A row that could not even be parsed (e.g. a broken JSON line): pre-flight reports `reason`."""

    def __init__(self, reason: str):
        self.reason = reason


@dataclass
class DataFile:
    path: Path  # local path (downloaded when the URI is remote)
    display: str  # what messages call it: the user's URI or path
    kind: str  # jsonl | json | parquet


@dataclass
class DatasetSource:
    """Where a dataset's splits are: local files per split, or a Hugging Face dataset id."""

    uri: str
    files: dict[str, list[DataFile]] = field(default_factory=dict)
    hub_id: str | None = None

    @property
    def is_hub(self) -> bool:
        return self.hub_id is not None


_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def looks_like_path(uri: str) -> bool:
    """A URI with a scheme, an absolute or ./relative path, or an existing local path (else: a hub id)."""
    return bool(_SCHEME.match(uri)) or uri.startswith(("/", "./", "../", "~")) or os.path.exists(uri)


def _kind(name: str) -> str | None:
    return DATA_SUFFIXES.get(PurePosixPath(name).suffix.lower())


def _split_of(name: str, splits: list[str]) -> str | None:
    """The split a file belongs to by its name ('train.jsonl', 'train-00001.parquet', 'eval.json')."""
    stem = PurePosixPath(name).name.lower()
    for split in splits:
        if stem == split.lower() or re.match(rf"^{re.escape(split.lower())}([._-]|$)", stem):
            return split
    return None


def resolve(spec: DatasetSpec, storage_spec: StorageSpec | None, cache_dir: Path) -> DatasetSource:
    """Locate the dataset; remote files are downloaded into cache_dir. Raises InvalidInput when absent."""
    uri = spec.uri
    if not looks_like_path(uri):
        return DatasetSource(uri=uri, hub_id=uri)
    from ..storage import store as st

    protocol, path = split_uri(os.path.expanduser(uri))
    if protocol == "file":
        local = Path(path)
        if not local.exists():
            raise InvalidInput(Reason.DATASET_NOT_FOUND, f"dataset {uri} does not exist", file=uri, field="dataset.uri")
        local_files = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file())
        pairs = [(p, uri if local.is_file() else f"{uri.rstrip('/')}/{p.relative_to(local).as_posix()}")
                 for p in local_files]
    else:
        remote = st.Storage(uri, storage_spec)
        try:
            is_dir = remote.is_dir()
            names = sorted(remote.list_files("")) if is_dir else []
            if not is_dir and not remote.exists():
                raise FileNotFoundError(uri)
        except FileNotFoundError:
            raise InvalidInput(Reason.DATASET_NOT_FOUND, f"dataset {uri} does not exist", file=uri, field="dataset.uri") from None
        dest = cache_dir / "dataset"
        if is_dir:
            names = [n for n in names if _kind(n)]
            pairs = [(remote.download_file(n, dest / n), f"{uri.rstrip('/')}/{n}") for n in names]
        else:
            name = PurePosixPath(path).name
            pairs = [(remote.download_file("", dest / name), uri)]
    data = [(p, d) for p, d in pairs if _kind(p.name)]
    if not data:
        if len(pairs) == 1:
            raise InvalidInput(Reason.UNREADABLE_DATASET, f"dataset {uri}: unsupported file type "
                               f"(expected {', '.join(sorted(DATA_SUFFIXES))})", file=uri, field="dataset.uri")
        raise InvalidInput(Reason.DATASET_NOT_FOUND, f"dataset {uri}: no .jsonl, .json or .parquet files found",
                           file=uri, field="dataset.uri")
    splits = [spec.train_split] + ([spec.eval_split] if spec.eval_split else [])
    by_split: dict[str, list[DataFile]] = {}
    for p, display in data:
        split = _split_of(p.name, splits) if len(data) > 1 else None
        by_split.setdefault(split or spec.train_split, []).append(DataFile(p, display, _kind(p.name)))
    if len(data) > 1 and spec.train_split not in by_split:
        raise InvalidInput(Reason.DATASET_NOT_FOUND, f"dataset {uri}: no file for split {spec.train_split!r}",
                           file=uri, field="dataset.trainSplit")
    return DatasetSource(uri=uri, files=by_split)


def iter_file_rows(f: DataFile) -> Iterator[tuple[int, Any]]:
    """(1-based row number, row or BadRow). JSON Lines: the line number; JSON array / Parquet: the index + 1.

    Raises InvalidInput for a file that cannot be read at all (and for an empty one).
    """
    try:
        if f.kind == "parquet":
            yield from _parquet_rows(f)
        elif f.kind == "json":
            yield from _json_rows(f)
        else:
            yield from _jsonl_rows(f)
    except OSError as exc:
        raise InvalidInput(Reason.UNREADABLE_DATASET, f"{f.display}: cannot read the file ({exc.strerror or exc})", file=f.display) from None


def _jsonl_rows(f: DataFile) -> Iterator[tuple[int, Any]]:
    any_row = False
    with open(f.path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield lineno, BadRow(f"not valid UTF-8 (byte {exc.start})")
                any_row = True
                continue
            if not line.strip():
                continue
            any_row = True
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                yield lineno, BadRow(f"invalid JSON: {exc.msg} at column {exc.colno}")
    if not any_row:
        raise InvalidInput(Reason.INVALID_DATASET, f"{f.display}: the file is empty (no rows)", file=f.display)


def _json_rows(f: DataFile) -> Iterator[tuple[int, Any]]:
    raw = f.path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(Reason.UNREADABLE_DATASET, f"{f.display}: not valid UTF-8 (byte {exc.start})", file=f.display) from None
    if not text.strip():
        raise InvalidInput(Reason.INVALID_DATASET, f"{f.display}: the file is empty (no rows)", file=f.display)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # JSON Lines in a .json file (as datasets' json loader accepts)
            yield from _jsonl_rows(DataFile(f.path, f.display, "jsonl"))
            return
        raise InvalidInput(Reason.INVALID_DATASET, f"{f.display}: invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                           file=f.display, row=exc.lineno) from None
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
        data = next(iter(data.values()))  # {"data": [...]} / {"rows": [...]}
    if not isinstance(data, list):
        raise InvalidInput(Reason.INVALID_DATASET, f"{f.display}: expected a JSON array of rows (or JSON Lines), "
                           f"got {type(data).__name__}", file=f.display)
    if not data:
        raise InvalidInput(Reason.INVALID_DATASET, f"{f.display}: the file is empty (no rows)", file=f.display)
    yield from enumerate(data, start=1)


def _parquet_rows(f: DataFile) -> Iterator[tuple[int, Any]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(f.path)
    except Exception as exc:  # ArrowInvalid and friends: the bytes are not Parquet
        raise InvalidInput(Reason.UNREADABLE_DATASET, f"{f.display}: not a readable Parquet file ({exc})", file=f.display) from None
    if pf.metadata.num_rows == 0:
        raise InvalidInput(Reason.INVALID_DATASET, f"{f.display}: the file is empty (no rows)", file=f.display)
    n = 0
    for batch in pf.iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            n += 1
            yield n, row


def iter_rows(source: DatasetSource, split: str, spec: DatasetSpec) -> Iterator[tuple[str, int, Any]]:
    """(display name, 1-based row number, row or BadRow) of every row of a split, files in order."""
    if source.is_hub:
        display = f"{source.hub_id} (split {split})"
        for n, row in enumerate(load_hub_split(spec, split), start=1):
            yield display, n, row
        return
    for f in source.files.get(split, []):
        for n, row in iter_file_rows(f):
            yield f.display, n, row


def load_hub_split(spec: DatasetSpec, split: str):
    """A split of a Hugging Face dataset id (dataset.config, dataset.revision; HF_TOKEN from the environment)."""
    import datasets

    where = f"dataset {spec.uri}" + (f" config {spec.config!r}" if spec.config else "")
    try:
        return datasets.load_dataset(spec.uri, name=spec.config, revision=spec.revision, split=split,
                                     token=os.environ.get("HF_TOKEN") or None)
    except (FileNotFoundError, ValueError) as exc:
        # ValueError: unknown split or config; FileNotFoundError / DatasetNotFoundError: no such dataset.
        raise InvalidInput(Reason.DATASET_NOT_FOUND, f"{where} split {split!r}: {str(exc).splitlines()[0][:300]}",
                           file=spec.uri, field="dataset.uri") from exc
    except Exception as exc:
        if type(exc).__name__ in ("DatasetNotFoundError", "RepositoryNotFoundError", "GatedRepoError",
                                  "RevisionNotFoundError"):
            raise InvalidInput(Reason.DATASET_NOT_FOUND, f"{where}: {str(exc).splitlines()[0][:300]}",
                               file=spec.uri, field="dataset.uri") from exc
        raise


def file_digests(source: DatasetSource) -> list[dict[str, Any]]:
    """sha256 and size of every dataset file (what was read is what is recorded)."""
    out = []
    for files in source.files.values():
        for f in files:
            h = hashlib.sha256()
            with open(f.path, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    h.update(chunk)
            out.append({"file": f.display, "sha256": h.hexdigest(), "bytes": f.path.stat().st_size})
    return out


# ---------------------------------------------------------------------------------------------
# the checked rows, on disk: one Arrow stream per split, read back memory-mapped
# ---------------------------------------------------------------------------------------------
ROW_SCHEMA_FIELDS = (("row", "string"), ("file", "string"), ("line", "int64"))


class RowWriter:
    """Normalized rows (JSON text) with their file and row number, written in batches: memory stays bounded."""

    BATCH = 8192

    def __init__(self, path: Path):
        import pyarrow as pa

        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._schema = pa.schema([(n, getattr(pa, t)()) for n, t in ROW_SCHEMA_FIELDS])
        self._writer = pa.ipc.new_stream(str(path), self._schema)
        self._cols: tuple[list, list, list] = ([], [], [])
        self.count = 0

    def add(self, row_json: str, file: str, line: int) -> None:
        for col, v in zip(self._cols, (row_json, file, line), strict=False):
            col.append(v)
        self.count += 1
        if len(self._cols[0]) >= self.BATCH:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if self._cols[0]:
            self._writer.write_batch(pa.record_batch([pa.array(c) for c in self._cols], schema=self._schema))
            self._cols = ([], [], [])

    def close(self) -> None:
        self._flush()
        self._writer.close()


def open_rows(path: Path):
    """The rows a RowWriter wrote, as a memory-mapped datasets.Dataset (columns row, file, line)."""
    import datasets

    return datasets.Dataset.from_file(str(path))


def split_datasets(spec: DatasetSpec, seed: int, train, evald=None):
    """(train, eval or None): the eval split, or evalFraction of the train split held out; then maxSamples.
    The rows keep their columns (file and line: the numbering pre-flight used)."""
    if evald is None and not spec.eval_split and spec.eval_fraction > 0 and len(train) >= 2:
        n_eval = min(len(train) - 1, max(1, round(len(train) * spec.eval_fraction)))
        parts = train.train_test_split(test_size=n_eval, seed=seed, shuffle=True)
        train, evald = parts["train"], parts["test"]
    if spec.max_samples and len(train) > spec.max_samples:
        train = train.shuffle(seed=seed).select(range(spec.max_samples))
    return train, evald

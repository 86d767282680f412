"""SVHN format 1's ``digitStruct.mat`` (http://ufldl.stanford.edu/housenumbers/): read, write,
and a parsed cache next to it.

The file is MATLAB v7.3, i.e. HDF5 behind a 512-byte MATLAB header. ``digitStruct`` is a
1 x N struct array with fields ``name`` (char) and ``bbox`` (a 1 x n struct array with fields
``height``, ``label``, ``left``, ``top``, ``width``, doubles). HDF5 keeps each field of a struct
array as an (N, 1) dataset of object references (MATLAB's dimensions reversed) to objects in
the group ``#refs#``: ``name`` -> the (len, 1) uint16 character codes, ``bbox`` -> a group.
Inside that group a single box (1 x 1 struct) keeps every field inline as a (1, 1) double;
several boxes (1 x n, n > 1) keep every field as (n, 1) references to (1, 1) doubles. Both
are read here, as the real files have both.

Conventions (as SVHN's own MATLAB code, ``im(top+1 : top+height, left+1 : left+width)``):
``left``/``top`` are the 0-based pixel offsets of a digit box's top-left corner, ``width``/
``height`` its size in pixels, ``label`` 1..10 with 10 for the digit 0; boxes are in reading
order.

Reading a real file takes minutes (each value of a multi-digit number's boxes is an HDF5
object of its own: hundreds of thousands of objects for ``train``, millions for ``extra``), so :func:`load_digit_struct` parses once and keeps the
result in ``digitStruct.parsed.npz`` beside the file, keyed by a hash of the file's bytes: a
changed, replaced or re-extracted ``.mat`` is parsed again, a copied data set keeps its cache.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np
from h5py import h5a, h5d, h5r, h5s, h5t
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

FIELDS = ("height", "label", "left", "top", "width")  # MATLAB's order (alphabetical)
CACHE_VERSION = 1
SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"


class DigitStructError(ValueError):
    """A ``digitStruct.mat`` that cannot be read; the message names the file and the fix."""


class DigitStruct(NamedTuple):
    """The parsed annotations of one SVHN folder, as stored (nothing checked or converted).

    ``names`` (list[str], N): the PNG file of each entry; ``counts`` (ndarray[N] int64): boxes
    of each entry; ``boxes`` (ndarray[M, 4] float64, M = counts.sum()): ``(left, top, width,
    height)`` of every box, entry by entry, in reading order; ``labels`` (ndarray[M] float64):
    their labels as stored (1..10, 10 meaning 0, in a sound file).
    """

    names: list[str]
    counts: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray

    @property
    def starts(self) -> np.ndarray:
        """ndarray[N] int64: index in ``boxes``/``labels`` of each entry's first box."""
        return np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)

    def entry(self, i: int) -> tuple[str, np.ndarray, np.ndarray]:
        """``(name, boxes ndarray[n, 4], labels ndarray[n])`` of entry ``i``."""
        s, n = int(self.starts[i]), int(self.counts[i])
        return self.names[i], self.boxes[s : s + n], self.labels[s : s + n]


# ------------------------------------------------------------------------------------- reading
def _damaged(path: Path, what: str) -> DigitStructError:
    return DigitStructError(
        f"{path}: {what}. The file is truncated, damaged or not SVHN's digitStruct.mat; "
        f"delete it and extract it again from the split's archive (e.g. train.tar.gz from "
        f"{SVHN_URL})."
    )


def _check_hdf5(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: SVHN format 1 needs each split folder (train/, test/, extra/) "
            f"with its PNGs and digitStruct.mat, as extracted from {SVHN_URL} (train.tar.gz, "
            "test.tar.gz, extra.tar.gz); point --data.init_args.data_dir at the folder holding "
            "them."
        )
    with open(path, "rb") as f:
        head = f.read(128)
    if not h5py.is_hdf5(path):
        if head.startswith(b"MATLAB 5.0 MAT-file"):
            raise DigitStructError(
                f"{path} is a MATLAB v5 .mat file, not the v7.3 (HDF5) digitStruct.mat of SVHN "
                "format 1. The cropped 32x32 digits (train_32x32.mat, format 2) are read by "
                "SVHNCroppedDataModule; otherwise extract the file again."
            )
        raise _damaged(path, f"not an HDF5 (MATLAB v7.3) file ({len(head)}+ bytes, header "
                       f"{head[:20]!r})")


def _read(dataset: h5d.DatasetID, dtype: np.dtype) -> np.ndarray:
    out = np.empty(dataset.shape, dtype=dtype)
    dataset.read(h5s.ALL, h5s.ALL, out)
    return out


def _read_entry(fid: h5py.h5f.FileID, name_ref: h5r.Reference, bbox_ref: h5r.Reference
                ) -> tuple[str, np.ndarray, np.ndarray]:
    """One entry: (name, boxes ndarray[n, 4] (left, top, width, height), labels ndarray[n]).

    Through h5py's low-level calls: the cost is per HDF5 object, and ``file[ref][()]`` adds
    several times the library's own cost to each."""
    codes = _read(h5r.dereference(name_ref, fid), np.dtype(np.uint16)).ravel()  # (len, 1)
    group = h5r.dereference(bbox_ref, fid)
    fields = {}
    for key in FIELDS:
        data = h5d.open(group, key.encode())
        if isinstance(data.get_type(), h5t.TypeReferenceID):  # several boxes: refs to doubles
            refs = _read(data, h5py.ref_dtype).ravel()
            fields[key] = np.array(
                [_read(h5r.dereference(r, fid), np.dtype(np.float64)).item() for r in refs]
            )
        else:  # one box: the value inline
            fields[key] = _read(data, np.dtype(np.float64)).ravel()
    lengths = {len(v) for v in fields.values()}
    if len(lengths) != 1:
        raise ValueError(f"fields of different lengths {({k: len(v) for k, v in fields.items()})}")
    boxes = np.stack([fields["left"], fields["top"], fields["width"], fields["height"]], axis=1)
    return "".join(map(chr, codes.tolist())), boxes.reshape(-1, 4), fields["label"]


def read_digit_struct(path: str | Path) -> DigitStruct:
    """Parse a ``digitStruct.mat`` (no cache; see :func:`load_digit_struct`).

    Raises:
        FileNotFoundError: no such file (the message says where SVHN comes from).
        DigitStructError: not HDF5 (e.g. a MATLAB v5 file), truncated, or without the
            ``digitStruct`` layout; the message names the file and, for a bad entry, its index.
    """
    path = Path(path)
    _check_hdf5(path)
    try:
        f = h5py.File(path, "r")
    except OSError as e:  # truncated files fail here ("truncated file: eof = ...")
        raise _damaged(path, f"HDF5 cannot open it ({e})") from e
    with f:
        group = f.get("digitStruct")
        if not isinstance(group, h5py.Group) or not {"name", "bbox"} <= set(group.keys()):
            found = sorted(f.keys()) if group is None else sorted(group.keys())
            raise _damaged(path, f"no digitStruct/name and digitStruct/bbox (found {found})")
        try:
            name_refs = group["name"][()].ravel()
            bbox_refs = group["bbox"][()].ravel()
        except (OSError, KeyError, ValueError) as e:
            raise _damaged(path, f"cannot read digitStruct ({e})") from e
        if len(name_refs) != len(bbox_refs):
            raise _damaged(path, f"{len(name_refs)} names but {len(bbox_refs)} bbox entries")
        names, counts, boxes, labels = [], [], [], []
        for i, (name_ref, bbox_ref) in enumerate(zip(name_refs, bbox_refs)):
            try:
                name, entry_boxes, entry_labels = _read_entry(f.id, name_ref, bbox_ref)
            except Exception as e:  # h5py raises OSError/KeyError/ValueError/TypeError here
                raise _damaged(path, f"entry {i} cannot be read ({type(e).__name__}: {e})") from e
            names.append(name)
            counts.append(len(entry_labels))
            boxes.append(entry_boxes)
            labels.append(entry_labels)
    return DigitStruct(
        names,
        np.asarray(counts, dtype=np.int64),
        np.concatenate(boxes).reshape(-1, 4) if boxes else np.zeros((0, 4)),
        np.concatenate(labels) if labels else np.zeros(0),
    )


# ------------------------------------------------------------------------------------- writing
MATLAB_HEADER = "MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: {date} HDF5 schema 1.00 ."


def _ref_names() -> Iterator[str]:
    """MATLAB's names for the objects in ``#refs#``: a, b, ..., z, ba, bb, ..."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    for n in itertools.count(1):
        for chars in itertools.product(letters, repeat=n):
            if n == 1 or chars[0] != "a":
                yield "".join(chars)


class _MatlabWriter:
    """Objects in MATLAB's v7.3 layout through h5py's low-level calls (cheaper per object than
    ``create_dataset`` + ``attrs``; 10k numbers are ~150k objects)."""

    def __init__(self, f: h5py.File) -> None:
        self.refs = f.create_group("#refs#")
        self.names = _ref_names()
        self.scalar_space = h5s.create(h5s.SCALAR)

    def tag(self, obj: h5py.h5o.ObjectID, cls: str) -> None:
        """Set the ``MATLAB_class`` attribute (a fixed-length string, as MATLAB writes it)."""
        value = np.array(cls.encode(), dtype=f"S{len(cls)}")
        attr = h5a.create(obj, b"MATLAB_class", h5t.py_create(value.dtype), self.scalar_space)
        attr.write(value)
        if cls == "char":  # characters stored as uint16 codes
            decode = h5a.create(obj, b"MATLAB_int_decode", h5t.STD_I32LE, self.scalar_space)
            decode.write(np.array(2, dtype=np.int32))

    def dataset(self, parent: h5py.h5g.GroupID, name: str, data: np.ndarray, cls: str | None
                ) -> h5d.DatasetID:
        refs = data.dtype == h5py.ref_dtype
        dtype = h5t.STD_REF_OBJ if refs else h5t.py_create(data.dtype)
        dataset = h5d.create(parent, name.encode(), dtype, h5s.create_simple(data.shape))
        dataset.write(h5s.ALL, h5s.ALL, data)
        if cls is not None:
            self.tag(dataset, cls)
        return dataset

    def ref(self, data: np.ndarray, cls: str) -> h5r.Reference:
        """Store ``data`` under a new name in ``#refs#``; its object reference."""
        name = next(self.names)
        self.dataset(self.refs.id, name, data, cls)
        return h5r.create(self.refs.id, name.encode(), h5r.OBJECT)

    def struct(self, fields: tuple[str, ...]) -> tuple[h5py.Group, h5r.Reference]:
        """A new struct group in ``#refs#`` and its reference."""
        name = next(self.names)
        group = self.refs.create_group(name)
        _struct_attrs(group, fields)
        return group, h5r.create(self.refs.id, name.encode(), h5r.OBJECT)


def _struct_attrs(group: h5py.Group, fields: tuple[str, ...]) -> None:
    group.attrs["MATLAB_class"] = np.bytes_("struct")
    names = np.empty(len(fields), dtype=object)
    names[:] = [np.array([c.encode() for c in f], dtype="S1") for f in fields]
    group.attrs.create("MATLAB_fields", names, dtype=h5py.vlen_dtype(np.dtype("S1")))


def write_digit_struct(path: str | Path, ds: DigitStruct) -> None:
    """Write ``ds`` as MATLAB v7.3 writes SVHN's ``digitStruct.mat`` (layout in the module
    docstring, the 512-byte MATLAB header included): the file :func:`read_digit_struct` reads,
    and that readers written for the real files read. Values are written as given."""
    path = Path(path)
    with h5py.File(path, "w", userblock_size=512) as f:
        w = _MatlabWriter(f)
        name_refs = np.empty((len(ds.names), 1), dtype=h5py.ref_dtype)
        bbox_refs = np.empty((len(ds.names), 1), dtype=h5py.ref_dtype)
        for i in range(len(ds.names)):
            name, boxes, labels = ds.entry(i)
            name_refs[i, 0] = w.ref(np.array([[ord(c)] for c in name], dtype=np.uint16), "char")
            bbox, bbox_refs[i, 0] = w.struct(FIELDS)
            columns = {"left": boxes[:, 0], "top": boxes[:, 1], "width": boxes[:, 2],
                       "height": boxes[:, 3], "label": labels}
            for key in FIELDS:
                values = np.asarray(columns[key], dtype=np.float64).reshape(-1, 1)
                if len(values) == 1:  # a 1 x 1 struct: the value inline
                    w.dataset(bbox.id, key, values, "double")
                else:  # 1 x n: references to (1, 1) doubles
                    cell = np.array([[w.ref(v.reshape(1, 1), "double")] for v in values],
                                    dtype=h5py.ref_dtype)
                    w.dataset(bbox.id, key, cell, None)
        top = f.create_group("digitStruct")
        _struct_attrs(top, ("name", "bbox"))
        w.dataset(top.id, "name", name_refs, None)
        w.dataset(top.id, "bbox", bbox_refs, None)
    text = MATLAB_HEADER.format(date=time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(0)))
    header = text.ljust(116).encode("ascii") + bytes(8) + b"\x00\x02" + b"IM"
    with open(path, "r+b") as f:
        f.write(header.ljust(512, b"\x00"))


# ------------------------------------------------------------------------------------- cache
def file_digest(path: Path) -> str:
    """BLAKE2b hash (hex) of a file's bytes (about 0.1 s for 100 MB)."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_path(path: Path) -> Path:
    """Where the parse of ``<folder>/digitStruct.mat`` is kept: ``<folder>/digitStruct.parsed.npz``."""
    return path.with_name(path.stem + ".parsed.npz")


def _read_cache(cache: Path, digest: str) -> DigitStruct | str:
    """The cached parse, or the reason it cannot be used."""
    try:
        with np.load(cache, allow_pickle=False) as z:
            if int(z["version"]) != CACHE_VERSION:
                return f"written by cache version {int(z['version'])}, this is {CACHE_VERSION}"
            if str(z["digest"]) != digest:
                return "stale: the .mat file changed since it was written"
            return DigitStruct(
                [str(n) for n in z["names"]], z["counts"], z["boxes"], z["labels"]
            )
    except Exception as e:  # noqa: BLE001 - a damaged cache is never fatal: parse again
        return f"unreadable ({type(e).__name__}: {e})"


def save_cache(path: str | Path, ds: DigitStruct, digest: str | None = None) -> Path:
    """Store ``ds`` as the parse of ``path`` (``digest``: the file's :func:`file_digest`, computed
    if not given), atomically (a temporary file renamed); returns the cache's path. ``OSError``
    if the folder is not writable."""
    path = Path(path)
    cache = cache_path(path)
    digest = file_digest(path) if digest is None else digest
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, version=CACHE_VERSION, digest=digest, names=np.array(ds.names, dtype=str),
                     counts=ds.counts, boxes=ds.boxes, labels=ds.labels)
        os.replace(tmp, cache)
    finally:
        tmp.unlink(missing_ok=True)
    return cache


def load_digit_struct(path: str | Path) -> DigitStruct:
    """:func:`read_digit_struct`, through the cache ``digitStruct.parsed.npz`` beside the file.

    The cache is used when its hash matches the file's bytes; a missing, stale (the ``.mat``
    changed), damaged or older-version cache is rebuilt, with a log line saying why. Where the
    folder is not writable the parse is used without caching, with a warning.
    """
    path = Path(path)
    _check_hdf5(path)
    cache = cache_path(path)
    digest = file_digest(path)
    if cache.is_file():
        cached = _read_cache(cache, digest)
        if isinstance(cached, DigitStruct):
            return cached
        rank_zero_info(f"Cache {cache} not used, {cached}; parsing {path} again.")
    start = time.perf_counter()
    ds = read_digit_struct(path)
    seconds = time.perf_counter() - start
    try:
        save_cache(path, ds, digest)
        rank_zero_info(f"Parsed {path} ({len(ds.names)} images) in {seconds:.1f} s; cached in "
                       f"{cache}.")
    except OSError as e:
        rank_zero_warn(
            f"Parsed {path} in {seconds:.1f} s but cannot cache it in {cache} ({e}); it will be "
            "parsed again on every run. Make the folder writable to keep the parse."
        )
    return ds

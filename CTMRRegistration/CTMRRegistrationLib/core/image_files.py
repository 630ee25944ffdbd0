"""Volume files checked ahead of loading: whole, 3-D, scalar and finite.

ITK and Slicer read a truncated compressed file without complaint (the missing voxels become zeros) and
Slicer's NIfTI reader turns NaN into zeros, so both are checked here on the file itself: compressed voxel
data is decompressed to its end (gzip/zlib check sums included) and its size compared with the one the
header promises (NIfTI-1/2, NRRD, MetaImage)."""

from __future__ import annotations

import contextlib
import gzip
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError

SUPPORTED = "CTMRRegistration registers 3-D scalar volumes (one grey value per voxel)"
CHUNK = 1 << 20
NRRD_TYPE_BYTES = {
    **dict.fromkeys(("signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t"), 1),
    **dict.fromkeys(("short", "short int", "signed short", "signed short int", "int16", "int16_t", "ushort",
                     "unsigned short", "unsigned short int", "uint16", "uint16_t"), 2),
    **dict.fromkeys(("int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t",
                     "float"), 4),
    **dict.fromkeys(("longlong", "long long", "long long int", "signed long long", "signed long long int",
                     "int64", "int64_t", "ulonglong", "unsigned long long", "unsigned long long int", "uint64",
                     "uint64_t", "double"), 8),
}
META_TYPE_BYTES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
                   "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8}


class _Damaged(Exception):
    """The file's voxel data is not what its header promises."""


class _NonFinite(Exception):
    """The file stores NaN or infinite voxel values."""


def _inflate(stream, sink=None) -> tuple[int, bytes]:
    """Decompress a gzip or zlib stream (concatenated gzip members too) to its end: (size, first 544 bytes);
    the decompressed bytes go to the binary file `sink` when one is given."""
    total, head = 0, b""
    decompressor = zlib.decompressobj(wbits=47)
    pending = b""
    while True:
        if not pending:
            pending = stream.read(CHUNK)
            if not pending:
                break
        try:
            out = decompressor.decompress(pending, CHUNK)
        except zlib.error as error:
            raise _Damaged(f"corrupt compressed data ({error})") from error
        pending = decompressor.unconsumed_tail
        total += len(out)
        if sink is not None:
            sink.write(out)
        if len(head) < 544:
            head += out[: 544 - len(head)]
        if decompressor.eof:
            pending = decompressor.unused_data
            if not pending.strip(b"\0"):
                pending = stream.read(CHUNK)
                if not pending.strip(b"\0"):
                    return total, head
            decompressor = zlib.decompressobj(wbits=47)
    raise _Damaged("the compressed data ends early (truncated file)")


def _expect(size: int, expected: int) -> None:
    if size < expected:
        raise _Damaged(f"truncated: {size} bytes of voxel data where the header promises {expected}")


def _nifti_header(head: bytes) -> tuple[str, tuple, int, int, int]:
    """(byte order, dims, datatype, bitpix, voxel offset) of a NIfTI-1 or NIfTI-2 header."""
    for order in "<>":
        if len(head) >= 348 and struct.unpack(order + "i", head[:4])[0] == 348:
            datatype, bitpix = struct.unpack(order + "2h", head[70:74])
            return order, struct.unpack(order + "8h", head[40:56]), datatype, bitpix, int(
                struct.unpack(order + "f", head[108:112])[0])
        if len(head) >= 540 and struct.unpack(order + "i", head[:4])[0] == 540:
            datatype, bitpix = struct.unpack(order + "2h", head[12:16])
            return order, struct.unpack(order + "8q", head[16:80]), datatype, bitpix, struct.unpack(
                order + "q", head[168:176])[0]
    raise _Damaged("not a NIfTI file (no valid header)")


NIFTI_FLOATS = {16: "f4", 64: "f8"}


def _check_nifti(path: Path, folder: Path | None = None) -> Path:
    """Check a NIfTI file; the file to read its voxels from: with `folder`, a compressed file's uncompressed
    copy written there while it is checked (decompressed once), else `path`."""
    compressed = path.name.lower().endswith(".gz")
    readable = path
    if compressed:
        readable = folder / path.name[:-3] if folder is not None else None
        with path.open("rb") as stream, (readable.open("wb") if readable else contextlib.nullcontext()) as sink:
            size, head = _inflate(stream, sink)
    else:
        size = path.stat().st_size
        with path.open("rb") as stream:
            head = stream.read(544)
    order, dims, datatype, bitpix, offset = _nifti_header(head)
    if not 1 <= dims[0] <= 7 or bitpix <= 0:
        raise _Damaged("invalid NIfTI header")
    voxels = int(np.prod([max(int(d), 1) for d in dims[1: dims[0] + 1]]))
    _expect(size - offset, voxels * bitpix // 8)
    if datatype in NIFTI_FLOATS:  # ITK reads NaN in NIfTI as 0: look at the stored values themselves
        dtype = order + NIFTI_FLOATS[datatype]
        if readable is None:
            values = np.frombuffer(gzip.decompress(path.read_bytes()), dtype=dtype, count=voxels, offset=offset)
        else:
            values = np.memmap(readable, dtype=dtype, mode="r", offset=offset, shape=(voxels,))
        if not np.isfinite(values).all():
            raise _NonFinite()
    return readable or path


def _header_fields(stream, separator: str, stop) -> dict[str, str]:
    fields: dict[str, str] = {}
    while True:
        line = stream.readline()
        text = line.decode("latin-1").strip()
        if not line or stop(text, fields):
            return fields
        if separator in text and not text.startswith("#"):
            key, value = text.split(separator, 1)
            fields[key.strip().lower()] = value.strip()
            if stop(text, fields):
                return fields


def _data_size(stream, data_file: str | None, folder: Path, compressed: bool) -> int:
    """Bytes of voxel data after the header (attached) or in `data_file` (detached), decompressed."""
    if data_file is not None:
        with (folder / data_file).open("rb") as detached:
            return _inflate(detached)[0] if compressed else (folder / data_file).stat().st_size
    if compressed:
        return _inflate(stream)[0]
    position = stream.tell()
    return stream.seek(0, 2) - position


def _check_nrrd(path: Path) -> None:
    with path.open("rb") as stream:
        if not stream.read(4) == b"NRRD":
            raise _Damaged("not a NRRD file")
        fields = _header_fields(stream, ":", lambda text, _: text == "")
        encoding = fields.get("encoding", "raw").lower()
        data_file = fields.get("data file") or fields.get("datafile")
        if encoding not in ("raw", "gzip", "gz") or (data_file or "").startswith("LIST") or " " in (data_file or ""):
            return
        element = NRRD_TYPE_BYTES.get(fields.get("type", "").lower())
        sizes = [int(s) for s in re.findall(r"\d+", fields.get("sizes", ""))]
        if element is None or not sizes or int(fields.get("byte skip", "0")) or int(fields.get("line skip", "0")):
            return
        size = _data_size(stream, data_file, path.parent, encoding != "raw")
    _expect(size, int(np.prod(sizes)) * element)


def _check_meta(path: Path) -> None:
    with path.open("rb") as stream:
        fields = _header_fields(stream, "=", lambda _, fields: "elementdatafile" in fields)
        data_file = fields.get("elementdatafile", "LOCAL")
        element = META_TYPE_BYTES.get(fields.get("elementtype", "").upper())
        sizes = [int(s) for s in fields.get("dimsize", "").split()]
        if element is None or not sizes or data_file.upper() == "LIST" or "%" in data_file or "headersize" in fields:
            return
        compressed = fields.get("compresseddata", "false").lower() == "true"
        size = _data_size(stream, None if data_file.upper() == "LOCAL" else data_file, path.parent, compressed)
    channels = int(fields.get("elementnumberofchannels", "1"))
    _expect(size, int(np.prod(sizes)) * element * channels)


def _non_finite(path: Path) -> str:
    return f"{path.name} contains NaN or infinite voxel values: {SUPPORTED} with finite values"


def _checker(path: Path):
    name = path.name.lower()
    return (_check_nifti if name.endswith((".nii", ".nii.gz")) else
            _check_nrrd if name.endswith((".nrrd", ".nhdr")) else
            _check_meta if name.endswith((".mha", ".mhd")) else None)


def data_damage(path) -> str | None:
    """Why the voxel data of `path` is not what its header promises (truncated, corrupt), or None."""
    path = Path(path)
    checker = _checker(path)
    try:
        if checker is not None:
            checker(path)
    except _Damaged as error:
        return str(error)
    except (OSError, ValueError, struct.error) as error:
        return f"unreadable ({error})"
    except _NonFinite:
        return None
    return None


def check_data_integrity(path, folder: Path | None = None) -> Path:
    """InputError when the voxel data of `path` is truncated or corrupt (NIfTI, NRRD, MetaImage), or, for NIfTI
    (whose reader turns them into zeros), holds NaN or infinite values. The file to read: with `folder`, a
    compressed NIfTI's uncompressed copy made there by the check (so it is decompressed once), else `path`."""
    path = Path(path)
    checker = _checker(path)
    if checker is None:
        return path
    try:
        if checker is _check_nifti:
            return _check_nifti(path, folder)
        checker(path)
        return path
    except _NonFinite as error:
        raise InputError(_non_finite(path)) from error
    except _Damaged as error:
        raise InputError(f"cannot read volume {path.name}: damaged file, {error}") from error
    except (OSError, ValueError, struct.error) as error:
        raise InputError(f"cannot read volume {path.name}: damaged file ({error})") from error


def check_written_volume(path) -> None:
    """Read a written volume file back without decoding its voxels twice: the voxel data to its end (size, and
    the compressed data's checksums) and the header through ITK. ValueError saying what is wrong."""
    damage = data_damage(path)
    if damage:
        raise ValueError(f"the file read back is damaged ({damage}; disk full?)")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()


def check_volume_file(path, folder: Path | None = None) -> Path:
    """InputError unless `path` holds whole, finite voxel data of at most 3 dimensions and one component; the
    file to read (see check_data_integrity: with `folder`, a compressed NIfTI's uncompressed copy).

    Files ITK cannot read are left to the caller's reader (it names the cause)."""
    path = Path(path)
    readable = check_data_integrity(path, folder)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(readable))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return readable
    size = reader.GetSize()
    if reader.GetDimension() > 3 and int(np.prod(size[3:])) > 1:
        raise InputError(f"{path.name} is a {reader.GetDimension()}-D image (size {'x'.join(map(str, size))}): "
                         f"{SUPPORTED}; extract one 3-D volume first")
    if reader.GetNumberOfComponents() > 1:
        raise InputError(f"{path.name} has {reader.GetNumberOfComponents()} values per voxel (colour or vector "
                         f"image): {SUPPORTED}")
    if reader.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64) and _checker(path) is not _check_nifti:
        image = reader.Execute()  # kept: a view of a temporary image would outlive it (NIfTI: checked above)
        if not np.isfinite(sitk.GetArrayViewFromImage(image)).all():
            raise InputError(_non_finite(path))
    return readable

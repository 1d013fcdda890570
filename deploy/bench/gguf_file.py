#!/usr/bin/env python3
"""GGUF files (llama.cpp's model format, version 3) with numpy only: write one, or list the
tensors of one.

A file is: the magic "GGUF", the version, the tensor and key/value counts; the key/values
(typed metadata); a table of tensors (name, dimensions innermost first, ggml type, offset);
then, from the next multiple of the alignment (32), each tensor's bytes at its offset.
Little-endian throughout.

    gguf_file.py list FILE.gguf     # name, ggml type, bytes of each tensor, one a line
"""
import struct
import sys

import numpy as np

MAGIC = b"GGUF"
VERSION = 3
ALIGNMENT = 32

# Value types of the key/values.
UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64 = 4, 5, 6, 7, 8, 9, 10
# Bytes of the fixed-size value types, for skipping them when reading.
_FIXED_SIZE = {0: 1, 1: 1, 2: 2, 3: 2, UINT32: 4, INT32: 4, FLOAT32: 4, BOOL: 1, UINT64: 8,
               11: 8, 12: 8}

# ggml tensor types this writer produces, and their names for every type the lister may meet.
GGML_F32, GGML_F16 = 0, 1
GGML_TYPE_NAMES = {0: "f32", 1: "f16", 2: "q4_0", 3: "q4_1", 6: "q5_0", 7: "q5_1", 8: "q8_0",
                   10: "q2_K", 11: "q3_K", 12: "q4_K", 13: "q5_K", 14: "q6_K", 15: "q8_K",
                   30: "bf16"}


def _string(text):
    data = text.encode("utf-8")
    return struct.pack("<Q", len(data)) + data


def _padding(size):
    return b"\0" * (-size % ALIGNMENT)


class GgufWriter:
    """Collects metadata and tensors, then writes them in one pass."""

    def __init__(self):
        self._metadata = []  # encoded key/value records
        self._tensors = []   # (name, numpy array)

    def _add(self, key, value_type, payload):
        self._metadata.append(_string(key) + struct.pack("<I", value_type) + payload)

    def add_uint32(self, key, value):
        self._add(key, UINT32, struct.pack("<I", value))

    def add_float32(self, key, value):
        self._add(key, FLOAT32, struct.pack("<f", value))

    def add_bool(self, key, value):
        self._add(key, BOOL, struct.pack("<?", value))

    def add_string(self, key, value):
        self._add(key, STRING, _string(value))

    def add_strings(self, key, values):
        self._add(key, ARRAY, struct.pack("<IQ", STRING, len(values)) +
                  b"".join(_string(v) for v in values))

    def add_int32s(self, key, values):
        array = np.asarray(values, dtype="<i4")
        self._add(key, ARRAY, struct.pack("<IQ", INT32, array.size) + array.tobytes())

    def add_tensor(self, name, array):
        """array: float32 or float16, numpy shape (outer..., inner): GGUF lists it reversed."""
        if array.dtype not in (np.float32, np.float16):
            raise ValueError(f"tensor {name}: dtype {array.dtype} (want float32 or float16)")
        self._tensors.append((name, np.ascontiguousarray(array)))

    def write(self, path):
        offsets, offset = [], 0
        for _, array in self._tensors:
            offsets.append(offset)
            offset += array.nbytes + len(_padding(array.nbytes))
        with open(path, "wb") as out:
            out.write(MAGIC + struct.pack("<IQQ", VERSION, len(self._tensors), len(self._metadata)))
            for record in self._metadata:
                out.write(record)
            for (name, array), tensor_offset in zip(self._tensors, offsets):
                ggml_type = GGML_F32 if array.dtype == np.float32 else GGML_F16
                out.write(_string(name) + struct.pack("<I", array.ndim) +
                          struct.pack(f"<{array.ndim}Q", *reversed(array.shape)) +
                          struct.pack("<IQ", ggml_type, tensor_offset))
            out.write(_padding(out.tell()))
            for _, array in self._tensors:
                out.write(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
                out.write(_padding(array.nbytes))


class _Reader:
    def __init__(self, data):
        self.data, self.at = data, 0

    def take(self, fmt):
        values = struct.unpack_from(fmt, self.data, self.at)
        self.at += struct.calcsize(fmt)
        return values if len(values) > 1 else values[0]

    def string(self):
        size = self.take("<Q")
        self.at += size
        return bytes(self.data[self.at - size:self.at]).decode("utf-8", "replace")

    def skip_value(self, value_type):
        if value_type == STRING:
            self.string()
        elif value_type == ARRAY:
            element_type, count = self.take("<IQ")
            if element_type in _FIXED_SIZE:
                self.at += _FIXED_SIZE[element_type] * count
            else:
                for _ in range(count):
                    self.skip_value(element_type)
        else:
            self.at += _FIXED_SIZE[value_type]


def list_tensors(path):
    """[(name, ggml type name, bytes)] in file order. A tensor's bytes run to the next one's
    offset (the last one's to the end of the file), so they include its alignment padding
    (under 32 bytes)."""
    data = memoryview(np.memmap(path, mode="r"))
    reader = _Reader(data)
    if bytes(data[:4]) != MAGIC:
        raise ValueError(f"{path}: not a GGUF file (no GGUF magic)")
    reader.at = 4
    _version, tensor_count, metadata_count = reader.take("<IQQ")
    alignment = ALIGNMENT
    for _ in range(metadata_count):
        key = reader.string()
        value_type = reader.take("<I")
        if key == "general.alignment":
            alignment = reader.take("<I")
        else:
            reader.skip_value(value_type)
    table = []
    for _ in range(tensor_count):
        name = reader.string()
        dims = reader.take("<I")
        reader.at += 8 * dims
        ggml_type, offset = reader.take("<IQ")
        table.append((name, GGML_TYPE_NAMES.get(ggml_type, str(ggml_type)), offset))
    data_start = reader.at + (-reader.at % alignment)
    ends = [offset for _, _, offset in table[1:]] + [len(data) - data_start]
    return [(name, type_name, end - offset) for (name, type_name, offset), end in zip(table, ends)]


def main():
    if len(sys.argv) != 3 or sys.argv[1] != "list":
        sys.exit(__doc__)
    for name, type_name, size in list_tensors(sys.argv[2]):
        print(name, type_name, size)


if __name__ == "__main__":
    main()

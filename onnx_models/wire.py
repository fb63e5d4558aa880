"""A model without its weights, read from the protobuf wire format (DESIGN §8).

`onnx.load` of a 1 GiB model holds all of it in memory (and the checker serializes it
once more). Processing does not need the weights, only the graph around them, so this
scan streams `model.onnx` and copies every field except the data of large tensors: a
tensor whose encoding exceeds `threshold` bytes keeps its name, type and shape, and its
data fields are skipped over (a seek, never read). Each such tensor becomes an
external-data tensor whose `location`/`offset`/`length` point back into model.onnx (the
raw bytes of its data), so the result, the skeleton, is a valid small ModelProto that
onnx parses and checks with model.onnx beside it.

The checker checks tensor data only in tensors it holds; for the skipped ones
`check_data` makes the same checks from what the scan recorded (which fields, how many
elements, how many bytes), with the checker's own messages.

Field numbers come from onnx.proto; which message fields can hold a tensor is read from
onnx's descriptors, so new containers in a later onnx are followed too.
"""

import secrets
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

CHUNK = 1024 * 1024
VARINT, FIXED64, LENGTH, START_GROUP, END_GROUP, FIXED32 = 0, 1, 2, 3, 4, 5
MAX_PROTOBUF = 2**31 - 1  # protobuf parses no message of 2 GiB or more

# TensorProto's data fields: number → (name, wire types it may come in).
FLOAT_DATA, INT32_DATA, STRING_DATA, INT64_DATA, RAW_DATA, DOUBLE_DATA, UINT64_DATA = 4, 5, 6, 7, 9, 10, 11
DATA_FIELDS = {
    FLOAT_DATA: ("float_data", (FIXED32, LENGTH)),
    INT32_DATA: ("int32_data", (VARINT, LENGTH)),
    STRING_DATA: ("string_data", (LENGTH,)),
    INT64_DATA: ("int64_data", (VARINT, LENGTH)),
    RAW_DATA: ("raw_data", (LENGTH,)),
    DOUBLE_DATA: ("double_data", (FIXED64, LENGTH)),
    UINT64_DATA: ("uint64_data", (VARINT, LENGTH)),
}
# The order in which the checker looks at them (the last one found names the field).
CHECKER_ORDER = (FLOAT_DATA, INT32_DATA, STRING_DATA, INT64_DATA, RAW_DATA, DOUBLE_DATA, UINT64_DATA)
TENSOR_DIMS, TENSOR_DATA_TYPE, TENSOR_NAME, TENSOR_EXTERNAL_DATA, TENSOR_DATA_LOCATION = 1, 2, 8, 13, 14
EXTERNAL = 1
MAX_DEPTH = 100  # protobuf's own nesting limit


class Malformed(ValueError):
    """The bytes are not a protobuf message."""


@dataclass
class Skipped:
    """A tensor whose data stayed in the file, and what the checker would look at."""

    name: str = ""
    dims: list = field(default_factory=list)
    data_type: int | None = None
    externally: bool = False  # the model itself declared data_location EXTERNAL
    counts: dict = field(default_factory=dict)  # data field → elements (raw_data: bytes)
    raw: tuple[int, int] | None = None  # (offset, length) of the last raw_data
    int32_max_byte: int = 0  # the largest byte of int32_data (all < 0x40: values within 0..63)
    encoded_size: int = 0  # the tensor's size as encoded in the file (what ByteSize() gives)


@dataclass
class Skeleton:
    data: bytes  # a serialized ModelProto without the skipped data
    skipped: list[Skipped]
    index_key: str  # the external_data key whose value indexes `skipped`

    def record(self, tensor) -> Skipped | None:
        """The record of a tensor of the parsed skeleton whose data was skipped, else None."""
        for entry in reversed(tensor.external_data):
            if entry.key == self.index_key:
                return self.skipped[int(entry.value)]
        return None


@cache
def _containers() -> dict:
    """Message full name → {field number: child message full name} for the fields that can
    hold a TensorProto (directly or below), from ModelProto down."""
    from google.protobuf.descriptor import FieldDescriptor

    import onnx

    tensor = onnx.TensorProto.DESCRIPTOR.full_name
    reaches: dict[str, bool] = {tensor: True}

    def can_reach(descriptor, visiting=()) -> bool:
        name = descriptor.full_name
        if name in reaches:
            return reaches[name]
        if name in visiting:
            return False
        result = False
        for item in descriptor.fields:
            if item.type == FieldDescriptor.TYPE_MESSAGE and can_reach(item.message_type, (*visiting, name)):
                result = True
        reaches[name] = result
        return result

    table: dict[str, dict[int, str]] = {}
    pending = [onnx.ModelProto.DESCRIPTOR]
    while pending:
        descriptor = pending.pop()
        if descriptor.full_name in table or descriptor.full_name == tensor:
            continue
        children = {}
        for item in descriptor.fields:
            if item.type == FieldDescriptor.TYPE_MESSAGE and can_reach(item.message_type):
                children[item.number] = item.message_type.full_name
                pending.append(item.message_type)
        table[descriptor.full_name] = children
    table[tensor] = {}
    return table


def _read_whole() -> set[tuple[str, int]]:
    """Tensors the checker reads the data of: a sparse tensor's indices (checked in order)."""
    import onnx

    return {(onnx.SparseTensorProto.DESCRIPTOR.full_name, onnx.SparseTensorProto.DESCRIPTOR.fields_by_name["indices"].number)}


def _names() -> tuple[str, str]:
    import onnx

    return onnx.ModelProto.DESCRIPTOR.full_name, onnx.TensorProto.DESCRIPTOR.full_name


def varint_bytes(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _entry(key: str, value: str) -> bytes:
    """A StringStringEntryProto as TensorProto.external_data."""
    body = b"\x0a" + varint_bytes(len(key.encode())) + key.encode() + b"\x12" + varint_bytes(len(value.encode())) + value.encode()
    return varint_bytes(TENSOR_EXTERNAL_DATA << 3 | LENGTH) + varint_bytes(len(body)) + body


class _Source:
    """The file, read forward with seeks over what is not needed."""

    def __init__(self, handle, size: int):
        self.handle = handle
        self.size = size
        self.position = 0

    def read(self, count: int) -> bytes:
        data = self.handle.read(count)
        if len(data) != count:
            raise Malformed("the message is truncated")
        self.position += count
        return data

    def skip(self, count: int) -> None:
        if self.position + count > self.size:
            raise Malformed("the message is truncated")
        self.position += count
        self.handle.seek(self.position)

    def varint(self) -> tuple[int, bytes]:
        raw = bytearray()
        while True:
            byte = self.handle.read(1)
            if not byte:
                raise Malformed("the message is truncated")
            raw += byte
            if byte[0] < 0x80:
                break
            if len(raw) == 10:
                raise Malformed("a varint is longer than 10 bytes")
        self.position += len(raw)
        value = 0
        for shift, byte in enumerate(raw):
            value |= (byte & 0x7F) << (7 * shift)
        return value, bytes(raw)

    def field_key(self, end: int) -> tuple[int, int, bytes]:
        key, raw = self.varint()
        number, wire = key >> 3, key & 7
        if number == 0 or self.position > end:
            raise Malformed("a field has number 0 or runs past its message")
        return number, wire, raw

    def length(self, end: int) -> tuple[int, bytes]:
        length, raw = self.varint()
        if self.position + length > end:
            raise Malformed("a field runs past its message")
        return length, raw

    def copy_other(self, number: int, wire: int, end: int) -> bytes:
        """The bytes of a field's value (after its key) that is not length-delimited."""
        if wire == VARINT:
            return self.varint()[1]
        if wire == FIXED64:
            return self.read(8) if self.position + 8 <= end else self._truncated()
        if wire == FIXED32:
            return self.read(4) if self.position + 4 <= end else self._truncated()
        if wire == START_GROUP:
            out = bytearray()
            while True:
                inner, inner_wire, raw = self.field_key(end)
                out += raw
                if inner_wire == END_GROUP:
                    if inner != number:
                        raise Malformed("a group ends with another field number")
                    return bytes(out)
                if inner_wire == LENGTH:
                    length, raw = self.length(end)
                    out += raw + self.read(length)
                else:
                    out += self.copy_other(inner, inner_wire, end)
        raise Malformed(f"wire type {wire} is not valid here")

    def _truncated(self):
        raise Malformed("a field runs past its message")


def scan(path: Path, threshold: int) -> Skeleton:
    """The skeleton of the model at `path`: the data of tensors larger than `threshold`
    bytes (as encoded) left out and pointed at in the file."""
    size = path.stat().st_size
    model, tensor = _names()
    skipped: list[Skipped] = []
    index_key = f"blobhub.skipped.{secrets.token_hex(8)}"  # no model can guess it
    containers = _containers()
    read_whole = _read_whole()

    with open(path, "rb", buffering=64 * 1024) as handle:
        source = _Source(handle, size)

        def message(kind: str, end: int, depth: int = 0) -> bytearray:
            if depth > MAX_DEPTH:
                raise Malformed("the messages nest too deeply")
            out = bytearray()
            children = containers[kind]
            while source.position < end:
                number, wire, key = source.field_key(end)
                if wire != LENGTH:
                    out += key + source.copy_other(number, wire, end)
                    continue
                length, raw_length = source.length(end)
                start = source.position
                child = children.get(number)
                if child is None or length <= threshold or (kind, number) in read_whole:
                    out += key + raw_length + source.read(length)
                    continue
                if child == tensor:
                    body = tensor_message(start + length)
                else:
                    body = message(child, start + length, depth + 1)
                out += key + varint_bytes(len(body)) + body
            if source.position != end:
                raise Malformed("a field runs past its message")
            return out

        def tensor_message(end: int) -> bytearray:
            out = bytearray()
            record = Skipped(encoded_size=end - source.position)
            data_start = None
            while source.position < end:
                number, wire, key = source.field_key(end)
                spec = DATA_FIELDS.get(number)
                if spec is not None and wire in spec[1]:
                    data_start = source.position if data_start is None else data_start
                    _skip_data(source, record, number, wire, end)
                    continue
                if wire == LENGTH:
                    length, raw_length = source.length(end)
                    value = source.read(length)
                    out += key + raw_length + value
                    if number == TENSOR_NAME:
                        record.name = value.decode("utf-8", "replace")
                    elif number == TENSOR_DIMS:
                        record.dims += _varints(value)
                    continue
                value = source.copy_other(number, wire, end)
                out += key + value
                if wire == VARINT and number == TENSOR_DIMS:
                    record.dims += _varints(value)
                elif wire == VARINT and number == TENSOR_DATA_TYPE:
                    record.data_type = _signed32(_varints(value)[0])
                elif wire == VARINT and number == TENSOR_DATA_LOCATION:
                    record.externally = _varints(value)[0] == EXTERNAL
            if source.position != end:
                raise Malformed("a field runs past its message")
            if data_start is None:
                return out  # nothing was skipped: the tensor is whole
            offset, length = record.raw if record.raw else (data_start, end - data_start)
            out += varint_bytes(TENSOR_DATA_LOCATION << 3 | VARINT) + varint_bytes(EXTERNAL)
            out += _entry("location", path.name) + _entry("offset", str(offset)) + _entry("length", str(length))
            out += _entry(index_key, str(len(skipped)))
            skipped.append(record)
            return out

        data = message(model, size)
    return Skeleton(data=bytes(data), skipped=skipped, index_key=index_key)


def _skip_data(source: _Source, record: Skipped, number: int, wire: int, end: int) -> None:
    """Count one occurrence of a data field and move past its bytes."""
    counts = record.counts
    if wire != LENGTH:  # one unpacked element
        value = source.copy_other(number, wire, end)
        counts[number] = counts.get(number, 0) + 1
        if number == INT32_DATA:
            record.int32_max_byte = max(record.int32_max_byte, *value)
        return
    length, _ = source.length(end)
    offset = source.position
    if number == RAW_DATA:
        counts[number] = length  # a singular field: the last one counts
        record.raw = (offset, length)
    elif number == STRING_DATA:
        counts[number] = counts.get(number, 0) + 1
    elif number in (FLOAT_DATA, DOUBLE_DATA):
        width = 4 if number == FLOAT_DATA else 8
        if length % width:
            raise Malformed("a packed field's length is not a multiple of its element size")
        counts[number] = counts.get(number, 0) + length // width
    else:  # packed varints: one element per byte below 0x80
        counts[number] = counts.get(number, 0) + _count_varints(source, offset, length, record, number)
        return
    source.skip(length)


def _count_varints(source: _Source, offset: int, length: int, record: Skipped, number: int) -> int:
    import numpy as np

    count, left, last = 0, length, 0
    while left:
        chunk = np.frombuffer(source.read(min(CHUNK, left)), dtype=np.uint8)
        left -= len(chunk)
        count += int(np.count_nonzero(chunk < 0x80))
        last = int(chunk[-1])
        if number == INT32_DATA:
            record.int32_max_byte = max(record.int32_max_byte, int(chunk.max()))
    if length and last >= 0x80:
        raise Malformed("a packed varint is truncated")
    return count


def _varints(data: bytes) -> list[int]:
    values, value, shift = [], 0, 0
    for byte in data:
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            values.append(value - (1 << 64) if value >= 1 << 63 else value)
            value, shift = 0, 0
    return values


def _signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def tensors(message):
    """Every TensorProto in a parsed model (or any message of it), wherever onnx keeps one."""
    import onnx

    containers = _containers()
    tensor = onnx.TensorProto.DESCRIPTOR.full_name
    pending = [message]
    while pending:
        item = pending.pop()
        name = item.DESCRIPTOR.full_name
        if name == tensor:
            yield item
            continue
        for number in containers.get(name, ()):
            field = item.DESCRIPTOR.fields_by_number[number]
            if field.is_repeated:
                pending.extend(getattr(item, field.name))
            elif item.HasField(field.name):
                pending.append(getattr(item, field.name))


# --- The checker's data checks, for the tensors whose data was skipped -----------------------


class CheckFailed(Exception):
    pass


def check_data(record: Skipped, model_path: Path) -> None:
    """What onnx's check_tensor checks of a tensor's data (onnx/checker.cc), for one whose
    data stayed in the file; raises CheckFailed with the checker's message."""
    import onnx

    T = onnx.TensorProto
    name = record.name
    present = [number for number in CHECKER_ORDER if record.counts.get(number)]
    field_name = DATA_FIELDS[present[-1]][0] if present else ""
    if record.externally:
        if present:
            raise CheckFailed(f"Data of TensorProto ( tensor name: {name}) is stored externally and should not have data field.{field_name}")
        return
    nelem = 1
    for dim in record.dims:
        if dim < 0:
            raise CheckFailed(f"Negative dimension value (tensor name: {name})")
        nelem *= dim
        if nelem >= 2**63:
            raise CheckFailed(f"Tensor dimension product overflow (tensor name: {name})")
    if nelem == 0 and present:
        raise CheckFailed(f"TensorProto (tensor name: {name}) is 0-element but contains data!")
    if nelem != 0 and len(present) != 1:
        raise CheckFailed(f"TensorProto (tensor name: {name}) should contain one and only one value field.")
    data_type = record.data_type
    too_large = f"TensorProto (tensor name: {name}) has a shape too large to validate against its data type."
    if RAW_DATA in present:
        if data_type == T.STRING:
            raise CheckFailed(f"STRING data (tensor name: {name}) should not be stored in raw_data field")
        have = record.counts[RAW_DATA]
        expected = 0
        if data_type in (T.UINT4, T.INT4, T.FLOAT4E2M1):
            expected = (nelem + 1) // 2
        elif data_type in (getattr(T, "UINT2", -1), getattr(T, "INT2", -1)):
            expected = (nelem + 3) // 4
        elif data_type in (getattr(T, "FLOAT6E2M3", -1), getattr(T, "FLOAT6E3M2", -1)):
            bits = nelem * 6
            if bits >= 2**63:
                raise CheckFailed(too_large)
            expected = bits // 8 + (bits % 8 != 0)
            if expected and have >= expected and bits % 8:
                with open(model_path, "rb") as handle:
                    handle.seek(record.raw[0] + expected - 1)
                    last = handle.read(1)[0]
                if last & (0xFF << (bits % 8)) & 0xFF:
                    raise CheckFailed(f"TensorProto (tensor name: {name}) has non-zero padding bits in its packed FLOAT6 raw_data.")
        else:
            width = _RAW_WIDTHS().get(data_type, 0)
            if width:
                expected = nelem * width
                if expected >= 2**63:
                    raise CheckFailed(too_large)
        if expected > 0 and have < expected:
            raise CheckFailed(
                f"TensorProto (tensor name: {name}) raw_data size ({have} bytes) is too small for the declared shape and type ({expected} bytes required)."
            )
        return
    rule = _TYPED_RULES().get(data_type)
    if rule is None:
        raise CheckFailed(f"Unrecognized data_type (tensor name: {name}): {data_type}")
    number, per_element, divisor, label, packed = rule
    if nelem != 0 and number not in present:
        raise CheckFailed(f"values of data_type '{data_type}' should be stored in field '{DATA_FIELDS[number][0]}' instead of '{field_name}'")
    if nelem <= 0:
        return
    expected = nelem * per_element
    if expected >= 2**63:
        raise CheckFailed(too_large)
    expected = -(-expected // divisor)
    have = record.counts.get(number, 0)
    if have < expected:
        what = "shape and packed type" if packed else "shape"
        raise CheckFailed(
            f"TensorProto (tensor name: {name}) {DATA_FIELDS[number][0]} size ({have}) is too small for the declared {what} ({expected} {label} values required)."
        )
    if data_type in (getattr(T, "FLOAT6E2M3", -1), getattr(T, "FLOAT6E3M2", -1)) and record.int32_max_byte >= 0x40:
        raise CheckFailed(f"TensorProto (tensor name: {name}) FLOAT6 int32_data values must use only bits 0-5.")


@cache
def _RAW_WIDTHS() -> dict:
    import onnx

    T = onnx.TensorProto
    widths = {}
    for names, width in (
        (("UINT8", "INT8", "BOOL", "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ", "FLOAT8E8M0"), 1),
        (("UINT16", "INT16", "FLOAT16", "BFLOAT16"), 2),
        (("FLOAT", "INT32", "UINT32"), 4),
        (("DOUBLE", "INT64", "UINT64", "COMPLEX64"), 8),
        (("COMPLEX128",), 16),
    ):
        widths.update({getattr(T, item): width for item in names if hasattr(T, item)})
    return widths


@cache
def _TYPED_RULES() -> dict:
    """data_type → (field, values per element, elements per value, label, packed)."""
    import onnx

    T = onnx.TensorProto
    rules = {}

    def add(names, rule):
        rules.update({getattr(T, item): rule for item in names if hasattr(T, item)})

    add(("FLOAT",), (FLOAT_DATA, 1, 1, "float", False))
    add(("COMPLEX64",), (FLOAT_DATA, 2, 1, "float", False))
    add(("DOUBLE",), (DOUBLE_DATA, 1, 1, "double", False))
    add(("COMPLEX128",), (DOUBLE_DATA, 2, 1, "double", False))
    add(
        ("INT32", "UINT8", "INT8", "UINT16", "INT16", "BOOL", "FLOAT16", "BFLOAT16", "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ",
         "FLOAT8E5M2", "FLOAT8E5M2FNUZ", "FLOAT8E8M0", "FLOAT6E2M3", "FLOAT6E3M2"),
        (INT32_DATA, 1, 1, "int32", False),
    )  # fmt: skip
    add(("UINT4", "INT4", "FLOAT4E2M1"), (INT32_DATA, 1, 8, "int32", True))
    add(("UINT2", "INT2"), (INT32_DATA, 1, 16, "int32", True))
    add(("INT64",), (INT64_DATA, 1, 1, "int64", False))
    add(("UINT32", "UINT64"), (UINT64_DATA, 1, 1, "uint64", False))
    add(("STRING",), (STRING_DATA, 1, 1, "string", False))
    return rules

#!/usr/bin/env python3
"""An independent reader of TensorBoard event files, for tests/train/test_metrics_log.cpp.

Written from the TFRecord format (uint64 length, masked CRC-32C of the length, payload, masked
CRC-32C of the payload) and the field numbers of TensorBoard's Event / Summary messages. The
protobuf decoding is protobuf's own library, with the messages described here in Python; the
CRC-32C is computed bit by bit. Prints one JSON object per event:
{"step", "wall_time", "file_version" (when set), "values": {tag: simple_value}}.
usage: read_tfevents.py FILE...
"""
import json
import struct
import sys

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory


def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def masked(data):
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def event_class():
    F = descriptor_pb2.FieldDescriptorProto
    f = descriptor_pb2.FileDescriptorProto(name="dt_test_event.proto", package="dttest", syntax="proto3")
    summary = f.message_type.add(name="Summary")
    value = summary.nested_type.add(name="Value")
    value.field.add(name="tag", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    value.field.add(name="simple_value", number=2, type=F.TYPE_FLOAT, label=F.LABEL_OPTIONAL)
    summary.field.add(name="value", number=1, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED, type_name=".dttest.Summary.Value")
    event = f.message_type.add(name="Event")
    event.field.add(name="wall_time", number=1, type=F.TYPE_DOUBLE, label=F.LABEL_OPTIONAL)
    event.field.add(name="step", number=2, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
    event.field.add(name="file_version", number=3, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    event.field.add(name="summary", number=5, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL, type_name=".dttest.Summary")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    desc = pool.FindMessageTypeByName("dttest.Event")
    if hasattr(message_factory, "GetMessageClass"):
        return message_factory.GetMessageClass(desc)
    return message_factory.MessageFactory(pool).GetPrototype(desc)


def main(paths):
    Event = event_class()
    for path in paths:
        data = open(path, "rb").read()
        pos = 0
        while pos < len(data):
            header = data[pos:pos + 8]
            if len(header) < 8:
                sys.exit(f"{path}: truncated record header at byte {pos}")
            (length,) = struct.unpack("<Q", header)
            (length_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
            if masked(header) != length_crc:
                sys.exit(f"{path}: bad length CRC at byte {pos}")
            payload = data[pos + 12:pos + 12 + length]
            (payload_crc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
            if len(payload) != length or masked(payload) != payload_crc:
                sys.exit(f"{path}: bad payload CRC at byte {pos}")
            pos += 16 + length
            e = Event()
            e.ParseFromString(payload)
            out = {"step": e.step, "wall_time": e.wall_time, "values": {v.tag: v.simple_value for v in e.summary.value}}
            if e.file_version:
                out["file_version"] = e.file_version
            print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])

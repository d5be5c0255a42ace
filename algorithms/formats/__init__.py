"""Training and inference data formats: content types and the decoders that read them into
arrays (CSV here; RecordIO-protobuf from smalgo.recordio, over the same byte sources)."""

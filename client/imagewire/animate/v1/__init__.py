"""Generated protobuf and gRPC stubs (see scripts/gen_protos.py); the modules here are never edited by hand."""

"""imagewire: gRPC stubs and clients for the caption and animate services."""

"""The server runtime both imagewire services share: errors and their gRPC mapping, image decoding, device
choice, settings, health, reflection, interceptors (auth, request ids, logging, metrics) and the lifecycle."""

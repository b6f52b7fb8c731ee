"""Bounds that are part of the contract, shared by the clients and the servers (the protos' comments state them)."""

# The largest encoded image a request may carry (CaptionRequest.image, AnimateRequest.image): 50 MiB.
MAX_IMAGE_BYTES = 50 * 1024 * 1024
# Room for the rest of a request message beside its image.
MAX_REQUEST_OVERHEAD_BYTES = 64 * 1024

"""imagewire-animator: image-to-video (Stable Video Diffusion) over gRPC, streamed while it is produced."""

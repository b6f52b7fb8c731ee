"""The caption service: image -> text with BLIP-family models, served over gRPC with dynamic batching."""

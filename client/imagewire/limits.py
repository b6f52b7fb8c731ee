"""Bounds that are part of the contract, shared by the clients and the servers (the protos' comments state them)."""

# The largest encoded image a request may carry (CaptionRequest.image, AnimateRequest.image): 50 MiB.
MAX_IMAGE_BYTES = 50 * 1024 * 1024
# Room for the rest of a request message beside its image.
MAX_REQUEST_OVERHEAD_BYTES = 64 * 1024

# A job id (AnimateRequest.job_id, WatchAnimationRequest.job_id...): it travels in metadata (x-imagewire-job-id),
# URLs and logs, so it is short and safe in any of them.
MAX_JOB_ID_CHARS = 128
JOB_ID_RULE = f"1 to {MAX_JOB_ID_CHARS} characters from A-Z, a-z, 0-9, '-', '_' and '.'"
_JOB_ID_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")


def is_job_id(text: str) -> bool:
    """Whether ``text`` is a valid job id (:data:`JOB_ID_RULE`)."""
    return 0 < len(text) <= MAX_JOB_ID_CHARS and set(text) <= _JOB_ID_CHARACTERS

"""What the animate service returns: the classes generated from the protos (imagewire/animate/v1/animate_types.py)
under the client's names.

The Animate and WatchAnimation streams yield one :class:`JobStatus` first, :class:`Progress` (repeatedly, with a
:class:`Preview` every few denoising steps), one :class:`VideoHeader`, the :class:`VideoChunk`\\ s in order, and
last one :class:`AnimateResult`.
"""

from __future__ import annotations

from imagewire.animate.v1 import animate_types

Stage = animate_types.Stage
JobState = animate_types.JobState
JobStatus = animate_types.JobStatus
Preview = animate_types.Preview
VideoFormat = animate_types.VideoFormat
Progress = animate_types.Progress
VideoHeader = animate_types.VideoHeader
VideoChunk = animate_types.VideoChunk
AnimateResult = animate_types.AnimateResult
AnimateUsage = animate_types.Usage
AnimateModelInfo = animate_types.ModelInfo
AnimateFieldInfo = animate_types.FieldInfo
AnimateModelList = animate_types.ListModelsResponse

AnimateEvent = JobStatus | Progress | Preview | VideoHeader | VideoChunk | AnimateResult

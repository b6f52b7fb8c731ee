from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CaptionRequest(_message.Message):
    __slots__ = ("image", "model_id", "prompt", "max_new_tokens", "num_beams")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    NUM_BEAMS_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    model_id: str
    prompt: str
    max_new_tokens: int
    num_beams: int
    def __init__(self, image: _Optional[bytes] = ..., model_id: _Optional[str] = ..., prompt: _Optional[str] = ..., max_new_tokens: _Optional[int] = ..., num_beams: _Optional[int] = ...) -> None: ...

class CaptionResponse(_message.Message):
    __slots__ = ("text", "model_id", "usage", "batch_size")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    text: str
    model_id: str
    usage: Usage
    batch_size: int
    def __init__(self, text: _Optional[str] = ..., model_id: _Optional[str] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., batch_size: _Optional[int] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("input_pixels", "usd_per_input_pixel", "price_usd")
    INPUT_PIXELS_FIELD_NUMBER: _ClassVar[int]
    USD_PER_INPUT_PIXEL_FIELD_NUMBER: _ClassVar[int]
    PRICE_USD_FIELD_NUMBER: _ClassVar[int]
    input_pixels: int
    usd_per_input_pixel: float
    price_usd: float
    def __init__(self, input_pixels: _Optional[int] = ..., usd_per_input_pixel: _Optional[float] = ..., price_usd: _Optional[float] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "default_model_id")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    default_model_id: str
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., default_model_id: _Optional[str] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("model_id", "device", "dtype", "max_image_bytes", "max_image_pixels", "default_max_new_tokens", "max_new_tokens_limit", "default_num_beams", "num_beams_limit", "max_batch_size", "usd_per_input_pixel", "family", "fields")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_PIXELS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_LIMIT_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_NUM_BEAMS_FIELD_NUMBER: _ClassVar[int]
    NUM_BEAMS_LIMIT_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    USD_PER_INPUT_PIXEL_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    device: str
    dtype: str
    max_image_bytes: int
    max_image_pixels: int
    default_max_new_tokens: int
    max_new_tokens_limit: int
    default_num_beams: int
    num_beams_limit: int
    max_batch_size: int
    usd_per_input_pixel: float
    family: str
    fields: _containers.RepeatedCompositeFieldContainer[FieldInfo]
    def __init__(self, model_id: _Optional[str] = ..., device: _Optional[str] = ..., dtype: _Optional[str] = ..., max_image_bytes: _Optional[int] = ..., max_image_pixels: _Optional[int] = ..., default_max_new_tokens: _Optional[int] = ..., max_new_tokens_limit: _Optional[int] = ..., default_num_beams: _Optional[int] = ..., num_beams_limit: _Optional[int] = ..., max_batch_size: _Optional[int] = ..., usd_per_input_pixel: _Optional[float] = ..., family: _Optional[str] = ..., fields: _Optional[_Iterable[_Union[FieldInfo, _Mapping]]] = ...) -> None: ...

class FieldInfo(_message.Message):
    __slots__ = ("name", "default_value", "minimum", "maximum", "multiple_of")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_VALUE_FIELD_NUMBER: _ClassVar[int]
    MINIMUM_FIELD_NUMBER: _ClassVar[int]
    MAXIMUM_FIELD_NUMBER: _ClassVar[int]
    MULTIPLE_OF_FIELD_NUMBER: _ClassVar[int]
    name: str
    default_value: _struct_pb2.Value
    minimum: float
    maximum: float
    multiple_of: int
    def __init__(self, name: _Optional[str] = ..., default_value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., minimum: _Optional[float] = ..., maximum: _Optional[float] = ..., multiple_of: _Optional[int] = ...) -> None: ...

"""Which imagewire service a target serves, asked through gRPC server reflection (both servers serve it unless
started with ``--no-reflection``): the ``imagewire`` command's ``models`` finds its service with it, and a call
that reached the wrong server gets a hint naming the right one.

The reflection stubs come from ``grpcio-reflection``, part of the client's optional ``cli`` extra.
"""

from __future__ import annotations

import grpc

from imagewire.client import AnimateCore, CaptionCore, ImagewireError, TlsConfig
from imagewire.client._channel import Balancing, sync_channel

#: The services by the name the command uses for each (``--service``).
SERVICES = {"caption": CaptionCore.SERVICE, "animate": AnimateCore.SERVICE}
#: A reflection call answers at once; a hint must not keep the caller waiting long.
REFLECTION_TIMEOUT_S = 5.0
_REFLECTION = "grpc.reflection.v1alpha.ServerReflection"


def served(target: str, *, tls: TlsConfig | None = None, auth_token: str | None = None,
           timeout: float = REFLECTION_TIMEOUT_S) -> set[str]:
    """The full names of the services ``target`` lists through reflection.

    ImportError without grpcio-reflection; :class:`ImagewireError` when the call fails (UNIMPLEMENTED: the
    server does not serve reflection).
    """
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    metadata = (("authorization", f"Bearer {auth_token}"),) if auth_token else ()
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    with sync_channel(target, Balancing(_REFLECTION, max_attempts=1, health_check=False), tls) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        try:
            # types-grpcio-reflection leaves the v1alpha stub's methods untyped.
            for response in stub.ServerReflectionInfo(iter([request]), timeout=timeout,  # type: ignore[operator]
                                                      metadata=metadata):
                return {service.name for service in response.list_services_response.service}
        except grpc.RpcError as error:
            raise ImagewireError.from_rpc_error(error) from None
    return set()


def find_service(target: str, *, tls: TlsConfig | None = None, auth_token: str | None = None) -> str:
    """The name (``caption`` or ``animate``) of the one imagewire service ``target`` serves; ValueError, saying
    to pass ``--service``, when reflection cannot tell."""
    choices = " or ".join(f"--service {name}" for name in SERVICES)
    try:
        names = served(target, tls=tls, auth_token=auth_token)
    except ImportError:
        raise ValueError(f"finding the service needs grpcio-reflection (pip install 'imagewire-client[cli]'): "
                         f"name it with {choices}") from None
    except ImagewireError as error:
        if error.code is not grpc.StatusCode.UNIMPLEMENTED:
            raise
        raise ValueError(f"{target} does not serve reflection (started with --no-reflection, or a proxy): name the "
                         f"service with {choices}") from None
    found = [name for name, service in SERVICES.items() if service in names]
    if len(found) != 1:
        what = "both imagewire services" if found else f"no imagewire service ({', '.join(sorted(names))})"
        raise ValueError(f"{target} serves {what}: name one with {choices}")
    return found[0]


def other_service(target: str, wanted: str, *, tls: TlsConfig | None = None,
                  auth_token: str | None = None) -> str | None:
    """After a call to service ``wanted`` (``caption`` or ``animate``) failed as if ``target`` did not serve it
    (UNIMPLEMENTED, or UNAVAILABLE from the health check of a service it does not know): the other service
    ``target`` serves instead, if reflection says so; else None."""
    try:
        names = served(target, tls=tls, auth_token=auth_token)
    except (ImportError, ImagewireError):
        return None
    others = [name for name, service in SERVICES.items() if service in names and name != wanted]
    return None if SERVICES[wanted] in names or not others else others[0]

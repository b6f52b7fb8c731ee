"""The Envoy front door: its configuration rendered from ``deploy/envoy/envoy.template.yaml`` (:mod:`.config`),
and Envoy as a supervised process for the tests and the benchmarks (:mod:`.process`)."""

from imagewire_serving.frontdoor.config import KUBERNETES, FrontDoor, configmap, render
from imagewire_serving.frontdoor.process import Envoy

__all__ = ["KUBERNETES", "Envoy", "FrontDoor", "configmap", "render"]

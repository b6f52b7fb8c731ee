"""How a call reaches a loaded AOTInductor package (:mod:`imagewire_serving.packages` builds and loads them): the
call's shape (which package serves it) and a key that finds it again in microseconds, the package run on the call's
flattened inputs, and its outputs given back as the eager forward gives them (an argument written in place and
returned is the caller's own object)."""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Any

import torch
import torch.utils._pytree as pytree


class Loaded:
    """A loaded package, called with the call's flattened inputs (flattened once, for its shape too) and its output
    spec read once (the package's own ``__call__`` flattens again and parses its specs on every call).

    An input the package updates in place and returns (a decoder's static KV cache: its tensors written in place,
    the same Python state before and after) is returned as the object it was called with, as the eager forward
    returns it, rather than rebuilt from its tensors: transformers rebuilds a cache generically, by class path,
    which cost 5-6% of a lone caption's time (docs/hardware.md)."""

    def __init__(self, package: Any) -> None:
        self._loader = package.loader
        self._outputs = pytree.treespec_loads(self._loader.get_call_spec()[1])
        # Found at the first call: which argument the output returns (None: none; not looked for yet: False).
        self._returned: _Returned | bool | None = False

    def __call__(self, spec: pytree.TreeSpec, leaves: list[Any], args: tuple[Any, ...], kwargs: dict[str, Any]
                 ) -> Any:
        outputs = self._loader.boxed_run([leaf for leaf in leaves if isinstance(leaf, torch.Tensor)])
        if self._returned is False:
            self._returned = _Returned.find(self._outputs, outputs, spec, leaves, args, kwargs)
        if isinstance(self._returned, _Returned):
            returned = self._returned.rebuild(outputs, spec, leaves, args, kwargs)
            if returned is not None:
                return returned
        return pytree.tree_unflatten(outputs, self._outputs)


class _Returned:
    """An output subtree that is one of the call's arguments (a top-level positional or keyword one): the same
    type and spec (so the same Python state) and the same tensors. ``rebuild`` checks both on every call."""

    def __init__(self, where: int | str, output: pytree.TreeSpec, start: int, reduced: pytree.TreeSpec) -> None:
        self.where, self.output, self.start, self.reduced = where, output, start, reduced

    @staticmethod
    def find(outputs_spec: pytree.TreeSpec, outputs: list[Any], spec: pytree.TreeSpec, leaves: list[Any],
             args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Returned | None:
        for where, inputs, first in _arguments(spec):
            argument = _argument(args, kwargs, where)
            if inputs.is_leaf() or not inputs.num_leaves or type(argument) in (list, tuple, dict):
                continue  # a tensor or other leaf, an object holding no tensors, a plain container
            for path, output, start in _subtrees(outputs_spec, (), 0):
                if output.type is type(argument) and output == inputs and \
                        _same_tensors(outputs[start:start + output.num_leaves], leaves[first:]):
                    return _Returned(where, output, start, _replaced(outputs_spec, path))
        return None

    def rebuild(self, outputs: list[Any], spec: pytree.TreeSpec, leaves: list[Any], args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> Any:
        """The output with the argument in its place; None where this call's argument is not what it returns."""
        end = self.start + self.output.num_leaves
        for where, inputs, first in _arguments(spec):
            if where == self.where:
                if inputs != self.output or not _same_tensors(outputs[self.start:end], leaves[first:]):
                    return None
                argument = _argument(args, kwargs, where)
                return pytree.tree_unflatten([*outputs[:self.start], argument, *outputs[end:]], self.reduced)
        return None


def _arguments(spec: pytree.TreeSpec) -> Iterator[tuple[int | str, pytree.TreeSpec, int]]:
    """Each top-level argument of a call's spec (``(args, kwargs)``), in order: its position or keyword, its spec
    and its first leaf's index."""
    first = 0
    positional, keywords = spec.children()
    for names, tree in ((range(positional.num_children), positional), (keywords.context, keywords)):
        for name, child in zip(names, tree.children(), strict=True):
            yield name, child, first
            first += child.num_leaves


def _argument(args: tuple[Any, ...], kwargs: dict[str, Any], where: int | str) -> Any:
    return args[where] if isinstance(where, int) else kwargs[where]


def _subtrees(spec: pytree.TreeSpec, path: tuple[int, ...], start: int
              ) -> Iterator[tuple[tuple[int, ...], pytree.TreeSpec, int]]:
    """Every subtree of ``spec`` below its root: its path (child indices), spec and first leaf's index."""
    for index, child in enumerate(spec.children()):
        if not child.is_leaf():
            yield (*path, index), child, start
            yield from _subtrees(child, (*path, index), start)
        start += child.num_leaves


def _replaced(spec: pytree.TreeSpec, path: tuple[int, ...]) -> pytree.TreeSpec:
    """``spec`` with the subtree at ``path`` made a leaf."""
    if not path:
        return pytree.treespec_leaf()
    children = list(spec.children())
    children[path[0]] = _replaced(children[path[0]], path[1:])
    return pytree.TreeSpec(spec.type, spec.context, children)


def _same_tensors(outputs: list[Any], inputs: list[Any]) -> bool:
    """Whether each output is the input in its place, or a view of all of its memory."""
    return all(isinstance(out, torch.Tensor) and isinstance(into, torch.Tensor) and
               (out is into or (out.data_ptr() == into.data_ptr() and out.shape == into.shape and
                                out.dtype == into.dtype and out.stride() == into.stride()))
               for out, into in zip(outputs, inputs, strict=False))


def call_shape(spec: pytree.TreeSpec, leaves: list[Any], batch: int | None) -> str:
    """A call's shape as text: the inputs' structure with its constants (a cache's state), each tensor's dtype,
    device and sizes, and other values. For a batch of several rows, B stands for its size in the tensors' first
    dimension and for a cache's ``batch_size``, so that every such batch has one shape. (A cache that a package
    returns is rebuilt from the state it had when the package was built: its ``batch_size`` is that batch's, not
    the call's, and the tensors' rows are what counts.)"""
    several = batch is not None and batch > 1

    def value(item: Any) -> str:
        if isinstance(item, torch.Tensor):
            sizes = ["B" if several and index == 0 and size == batch else str(size)
                     for index, size in enumerate(item.shape)]
            return f"T({item.dtype},{item.device.type},[{','.join(sizes)}])"
        if isinstance(item, dict):
            return "{" + ",".join(f"{value(key)}:" + ("B" if several and key == "batch_size" else value(inner))
                                  for key, inner in item.items()) + "}"
        if isinstance(item, list | tuple):
            return "[" + ",".join(value(inner) for inner in item) + "]"
        return repr(item)

    def node(tree: pytree.TreeSpec) -> str:
        if tree.is_leaf():
            return "*"
        kind = getattr(tree.type, "__qualname__", repr(tree.type))
        return f"{kind}{value(tree.context)}(" + ",".join(node(child) for child in tree.children()) + ")"

    return node(spec) + "|" + ";".join(value(leaf) for leaf in leaves)


def seen_key(spec: pytree.TreeSpec, leaves: list[Any], batch: int | None) -> Hashable | None:
    """A hashable stand-in for :func:`call_shape`: calls with equal keys have equal call shapes (the structure with
    its constants, each tensor's dtype, device and sizes, each other value with its type). None where something in
    the call cannot be hashed."""
    signature = tuple((leaf.dtype, leaf.device, leaf.shape) if isinstance(leaf, torch.Tensor) else (type(leaf), leaf)
                      for leaf in leaves)
    key = (spec, batch, signature)
    try:
        hash(key)
    except TypeError:
        return None
    return key

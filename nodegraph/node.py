"""The node definition API: one declaration per node type.

A declaration drives everything else: validation, the JSON schema, the CLI
catalogue and the editor's node list.

    @node("Decode", category="latent",
          inputs={"latent": Input(LATENT, "The latent to decode"),
                  "vae": Input(VAE, "The VAE of the latent's space")},
          outputs={"image": Output(IMAGE)})
    def decode(latent, vae): ...

The function gets one keyword argument per input, plus `ctx` (a
`nodegraph.executor.NodeContext`) if it asks for one. It returns the single
output's value, a tuple in output order, or, for an output node without
outputs, a summary (such as the files it wrote).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, fields
from typing import Any, Callable

from . import types as T
from .context import RunOptions

REQUIRED: Any = type("Required", (), {"__repr__": lambda self: "REQUIRED"})()
# What a path input (`Input.path`) names
IMAGE_FILE, IMAGE_FOLDER, MODEL_PATH = "image", "folder", "model"


@dataclass(frozen=True)
class Input:
    """A typed input.

    `expect` refines the type from the other inputs' types, e.g. a Decode's
    latent must live in its VAE's space: `expect=lambda i: Latent(i.type("vae").space)`.
    """

    type: T.Type
    description: str = ""
    default: Any = REQUIRED
    min: float | None = None
    max: float | None = None
    optional: bool = False
    expect: Callable[[Any], T.Type] | None = None
    # What the value names: a local file or folder (or may: LoadModel's model names a builtin or
    # a hub id too), of kind IMAGE_FILE, IMAGE_FOLDER or MODEL_PATH; an editor offers a list of
    # them. Provenance withholds such paths when they lead outside the working directory; what the
    # node reads there is known by its fingerprint, so two paths to the same content are the same input.
    path: str | None = None
    # () -> values an editor offers for this input besides files of its path kind (LoadModel: the builtins)
    suggestions: Callable[[], list[str]] | None = None
    # (model input, component): an image given here is encoded with that component of the
    # resource the model input gets (Img2Img's image: ("model", "vae")). A latent of the same
    # component may stand in for the image's decoding: see the decode_encode pass.
    encoded_by: tuple[str, str] | None = None
    # The node reads only which stream item this is, not its value (ItemName): the value is
    # not loaded for it.
    identity_only: bool = False

    @property
    def required(self) -> bool:
        return self.default is REQUIRED and not self.optional


@dataclass(frozen=True)
class Output:
    """A typed output. A `stream` output yields `StreamItem`s: everything downstream
    of it runs once per item, one item at a time, so a folder of any size fits in memory."""

    type: T.Type
    description: str = ""
    stream: bool = False
    # The value holds loaded weights (see nodegraph.resources): the executor loads it before
    # the nodes that read it and releases it after the last one.
    resource: bool = False


@dataclass(frozen=True)
class Codec:
    """A node that turns a value into its encoding by a coder it takes as an input, or back (an
    Encode or a Decode and its VAE): what the decode_encode pass needs to know."""

    direction: str  # "decode" or "encode"
    value: str  # the input that is decoded (a latent) or encoded (an image)
    coder: str  # the input giving the coder (a VAE resource)
    output: str  # the output with the result


@dataclass(frozen=True)
class StreamItem:
    """One item of a stream output.

    `key` identifies the item's content (e.g. a file hash) for the cache, `label`
    names it for people and filenames, and `load()` produces the value; it runs only
    when something downstream is not cached, and an error it raises fails this item only.
    """

    key: str
    label: str
    load: Callable[[], Any]


@dataclass(frozen=True)
class NodeDef:
    name: str
    function: Callable[..., Any]
    inputs: dict[str, Input]
    outputs: dict[str, Output]
    category: str = ""
    version: int = 1
    output_node: bool = False
    description: str = ""
    # (InputView) -> {output name: Type}: output types that depend on the inputs.
    # It may raise InputError, which validation reports against that input.
    infer: Callable[[Any], dict[str, T.Type]] | None = None
    # (literal values) -> str: identity of what the node reads from outside the graph (file
    # contents, model weights), folded into its cache key and recorded as provenance. None:
    # not known before the node runs (a path from a link); the node then never comes from the cache.
    fingerprint: Callable[[dict[str, Any]], str | None] | None = None
    # The node changes the world (writes files). It is never merged with an equal node, and
    # its cached result stands only while `effect_present(result)` says the effect is still
    # there (without that hook, it runs every time).
    side_effects: bool = False
    effect_present: Callable[[Any], bool] | None = None
    # Fields of RunOptions the node's result depends on (LoadModel: device); they join its key.
    reads_options: tuple[str, ...] = ()
    # (literal values) -> {resource output: {component name: Component}}: the components its
    # resource outputs will hold, known before anything loads; None where that is not known.
    resources: Callable[[dict[str, Any]], dict[str, dict[str, Any]] | None] | None = None
    codec: Codec | None = None
    takes_context: bool = field(default=False)

    def inputs_as_run(self, given: dict[str, Any], drawn: dict[str, Any] | None = None) -> dict[str, Any]:
        """Every declared input as the node runs: a value drawn for this run (a resolved random
        seed), else the value given (a literal or a Link), else the declared default; None for an
        optional input left unset. Undeclared inputs are left out, and so are missing required ones.
        Validation, keys, execution and Save all read a node's inputs through this one function."""
        values = {}
        for name, spec in self.inputs.items():
            if drawn and name in drawn:
                values[name] = drawn[name]
            elif name in given:
                values[name] = given[name]
            elif spec.default is not REQUIRED:
                values[name] = spec.default
            elif spec.optional:
                values[name] = None
        return values

    def to_json(self) -> dict:
        """The node as the catalogue and the editor see it."""

        def input_json(spec: Input) -> dict:
            out: dict[str, Any] = {"type": T.to_json(spec.type), "description": spec.description,
                                   "required": spec.required}
            if spec.default is not REQUIRED:
                out["default"] = spec.default
            for bound in ("min", "max"):
                if getattr(spec, bound) is not None:
                    out[bound] = getattr(spec, bound)
            return out

        return {
            "name": self.name,
            "category": self.category,
            "version": self.version,
            "description": self.description,
            "output_node": self.output_node,
            "side_effects": self.side_effects,
            "inputs": {name: input_json(spec) for name, spec in self.inputs.items()},
            "outputs": {name: {"type": T.to_json(o.type), "description": o.description, "stream": o.stream}
                        for name, o in self.outputs.items()},
        }


def define(name: str, function: Callable[..., Any], *, inputs: dict[str, Input],
           outputs: dict[str, Output] | None = None, description: str | None = None, **declaration: Any) -> NodeDef:
    """Check a declaration against its function and build the NodeDef; `declaration` holds the
    NodeDef's other fields (category, version, output_node, infer, fingerprint, ...)."""
    outputs = outputs or {}
    params = inspect.signature(function).parameters
    declared = set(inputs)
    accepted = set(params) - {"ctx"}
    if declared != accepted and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        raise TypeError(
            f"node {name}: inputs {sorted(declared)} do not match the parameters of "
            f"{function.__qualname__} {sorted(accepted)}"
        )
    unknown = set(declaration) - {f.name for f in fields(NodeDef)} | {"takes_context"} & set(declaration)
    if unknown:
        raise TypeError(f"node {name}: {', '.join(sorted(unknown))} is not part of a node declaration")
    definition = NodeDef(name=name, function=function, inputs=dict(inputs), outputs=dict(outputs),
                         description=description if description is not None else inspect.getdoc(function) or "",
                         takes_context="ctx" in params, **declaration)
    _check_declaration(definition)
    return definition


def _check_declaration(definition: NodeDef) -> None:
    name = definition.name
    if not definition.outputs and not definition.output_node:
        raise TypeError(f"node {name}: a node needs outputs or output_node=True")
    if definition.effect_present is not None and not definition.side_effects:
        raise TypeError(f"node {name}: effect_present is for nodes with side_effects=True")
    unknown_options = set(definition.reads_options) - {f.name for f in fields(RunOptions)}
    if unknown_options:
        raise TypeError(f"node {name}: reads_options names {sorted(unknown_options)}, which RunOptions has not")
    for input_name, spec in definition.inputs.items():
        if spec.default is REQUIRED:
            continue
        problem = T.literal_problem(spec.type, spec.default)
        if problem and not (spec.optional and spec.default is None):
            raise TypeError(f"node {name}: default of {input_name!r} is not {problem}")

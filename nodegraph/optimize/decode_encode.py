"""Decode→encode elimination: where a decoded image is only encoded again by the same coder
(a VAE of the same weights), hand on the latent it was decoded from.

That is a Decode feeding an Encode, or feeding an input that encodes its image with a model's
VAE (`Input.encoded_by`) and also takes a latent of that VAE's space (Img2Img's `image`). The
Decode stays while something else (a Save) still needs its image. Never across latent spaces
or different VAEs. This changes results on purpose: it skips a lossy VAE round trip.
"""

from __future__ import annotations

from ..graph import Graph, Link
from ..plan import Plan
from ..validation import link_accepted
from .rewrite import Rewrite


def run(graph: Graph, plan: Plan, targets: list[str]) -> tuple[Graph, list[Rewrite]]:
    rewired, rewrites = graph, []
    for decoder in plan.order:
        codec = plan.definitions[decoder].codec
        if codec is None or codec.direction != "decode":
            continue
        inputs = graph.inputs_of(decoder)
        latent, coder = inputs.get(codec.value), _weights(graph, plan, inputs.get(codec.coder))
        if type(latent) is not Link or coder is None:
            continue
        for consumer, name in graph.consumers(decoder, codec.output):
            edit = _encoder_bypass(graph, plan, consumer, name, coder) or \
                _latent_input(graph, plan, consumer, name, coder, latent)
            if edit is None:
                continue
            rewired = rewired.copy() if rewired is graph else rewired
            edit(rewired, latent)
            rewrites.append(Rewrite("decode_encode", (decoder, consumer),
                                    f"{consumer}.{name} gets {latent.node}.{latent.output} instead of its decoding "
                                    f"by {decoder} and encoding again", changes_results=True))
    return rewired, rewrites


def _weights(graph: Graph, plan: Plan, link, component: str | None = None) -> frozenset[str] | None:
    """Identities of the weights of the resource a link carries (or of one of its components)."""
    if type(link) is not Link:
        return None
    held = (plan.resources(graph, link.node) or {}).get(link.output)
    if not held or (component is not None and component not in held):
        return None
    parts = [held[component]] if component is not None else held.values()
    return frozenset(part.identity for part in parts)


def _encoder_bypass(graph: Graph, plan: Plan, consumer: str, name: str, coder: frozenset[str]):
    """An Encode of the decoded image with the same weights: its consumers take the latent instead."""
    codec = plan.definitions[consumer].codec
    if codec is None or codec.direction != "encode" or codec.value != name:
        return None
    if _weights(graph, plan, graph.inputs_of(consumer).get(codec.coder)) != coder:
        return None
    return lambda rewired, latent: rewired.redirect(Link(consumer, codec.output), latent)


def _latent_input(graph: Graph, plan: Plan, consumer: str, name: str, coder: frozenset[str], latent: Link):
    """An input that encodes its image with the same VAE, and takes that VAE's latents too."""
    encoded_by = plan.definitions[consumer].inputs[name].encoded_by
    if encoded_by is None:
        return None
    model, component = encoded_by
    if _weights(graph, plan, graph.inputs_of(consumer).get(model), component) != coder:
        return None
    if not link_accepted(graph, plan.typed, consumer, name, latent):
        return None
    return lambda rewired, latent: rewired.set_input(consumer, name, latent)

"""Small pure node types for engine tests, in a registry of their own."""

from __future__ import annotations

from nodegraph import types as T
from nodegraph.errors import InputError
from nodegraph.node import Input, Output, StreamItem
from nodegraph.registry import Registry

registry = Registry()
calls: list[tuple[str, tuple]] = []  # (node type, arguments) of every call, for tests to inspect

SPACE_A = T.LatentSpace("a", 4, 0.5)
SPACE_B = T.LatentSpace("b", 4, 1.0)
SPACES = {"a": SPACE_A, "b": SPACE_B}


@registry.node("Const", category="math", inputs={"value": Input(T.INT, "A number", default=0)},
               outputs={"value": Output(T.INT)})
def const(value):
    calls.append(("Const", (value,)))
    return value


@registry.node("Add", category="math",
               inputs={"a": Input(T.INT, "First term"), "b": Input(T.INT, "Second term", default=0, min=-100, max=100)},
               outputs={"value": Output(T.INT)})
def add(a, b):
    calls.append(("Add", (a, b)))
    return a + b


@registry.node("Show", category="output", inputs={"value": Input(T.INT | T.FLOAT, "What to show"),
                                                  "label": Input(T.STRING, "A label", default="")},
               output_node=True)
def show(value, label):
    calls.append(("Show", (value, label)))
    return {"shown": value, "label": label}


@registry.node("Seeded", category="math", inputs={"seed": Input(T.SEED, "Seed", default=0)},
               outputs={"value": Output(T.INT)})
def seeded(seed, ctx):
    calls.append(("Seeded", (seed, ctx.workflow)))
    return seed % 1000


@registry.node("Pick", category="math", inputs={"mode": Input(T.Choice("low", "high"), "Which", default="low")},
               outputs={"value": Output(T.INT)})
def pick(mode):
    return 0 if mode == "low" else 100


def _latent_space(view):
    space = view.value("space")
    if space not in SPACES:
        raise InputError("space", f"unknown space {space!r}", code="space.unknown", hint="use a or b")
    return {"latent": T.Latent(SPACES[space]), "vae": T.Vae(SPACES[space])}


@registry.node("MakeLatent", category="latent", inputs={"space": Input(T.STRING, "Latent space name")},
               outputs={"latent": Output(T.LATENT), "vae": Output(T.VAE)}, infer=_latent_space)
def make_latent(space):
    return (f"latent in {space}", f"vae of {space}")


@registry.node("Decode", category="latent",
               inputs={"latent": Input(T.LATENT, "Latent", expect=lambda view: T.Latent(view.type("vae").space)),
                       "vae": Input(T.VAE, "VAE")},
               outputs={"image": Output(T.IMAGE)})
def decode(latent, vae):
    return f"image of {latent}"


@registry.node("Upscale", category="image", inputs={"image": Input(T.IMAGE, "Image")},
               outputs={"image": Output(T.IMAGE)})
def upscale(image):
    return f"big {image}"


@registry.node("Preview", category="output", inputs={"image": Input(T.IMAGE, "Image")}, output_node=True)
def preview(image):
    return {"image": image}


@registry.node("Steps", category="math", inputs={"value": Input(T.INT, "Input"), "steps": Input(T.INT, default=3)},
               outputs={"value": Output(T.INT)})
def steps(value, steps, ctx):
    for step in range(steps):
        ctx.progress(step + 1, steps)
    return value


@registry.node("Fail", category="math", inputs={"value": Input(T.INT, "Input")}, outputs={"value": Output(T.INT)})
def fail(value):
    raise InputError("value", f"expected an even number, got {value}", hint="add one")


@registry.node("Numbers", category="stream", inputs={"values": Input(T.STRING, "Comma-separated numbers")},
               outputs={"value": Output(T.INT, stream=True)})
def numbers(values):
    def load(text):
        calls.append(("load", (text,)))
        return int(text)  # a bad entry fails its own item only

    return [StreamItem(key=text, label=f"n{index}", load=lambda text=text: load(text))
            for index, text in enumerate(values.split(","))]

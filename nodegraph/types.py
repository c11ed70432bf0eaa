"""Socket types, and the one place where their compatibility rules live.

Types are immutable values. Most are plain singletons (INT, IMAGE, ...); LATENT,
VAE and MODEL carry the latent space they belong to, so that a latent from one
VAE family cannot reach a node that expects another.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


class Type:
    """Base class of all socket types."""

    name: str = "?"

    def __str__(self) -> str:
        return self.name

    def __or__(self, other: Type) -> OneOf:
        return OneOf(_flatten(self) + _flatten(other))


@dataclass(frozen=True, eq=True)
class Primitive(Type):
    """A type whose values may be written inline in a graph file."""

    name: str


@dataclass(frozen=True, eq=True)
class Choice(Type):
    """One string out of a fixed list."""

    options: tuple[str, ...]

    def __init__(self, *options: str):
        object.__setattr__(self, "options", tuple(options))

    @property
    def name(self) -> str:
        return "CHOICE"


@dataclass(frozen=True, eq=True)
class Data(Type):
    """A runtime value that only a link can carry (an image, a mask, ...)."""

    name: str


@dataclass(frozen=True, eq=True)
class LatentSpace:
    """The space a latent lives in: which VAE family made it, how it is scaled, and how many
    pixels a side of one latent cell covers."""

    name: str
    channels: int
    scaling_factor: float
    downscale: int = 8

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, eq=True)
class Latent(Type):
    """A latent tensor; `space=None` means any space (or not yet known)."""

    space: LatentSpace | None = None

    @property
    def name(self) -> str:
        return f"LATENT[{self.space}]" if self.space else "LATENT"


@dataclass(frozen=True, eq=True)
class Vae(Type):
    """A VAE, which encodes images into and decodes latents from its space."""

    space: LatentSpace | None = None

    @property
    def name(self) -> str:
        return f"VAE[{self.space}]" if self.space else "VAE"


@dataclass(frozen=True, eq=True)
class Model(Type):
    """A loaded diffusion model.

    As a value: `family` and `space` say what was loaded, `tasks` what it can do,
    and `latent_image` whether its img2img/inpaint pipelines take a latent of its
    space as `image`. As an expectation: `tasks` lists what the node needs.
    """

    family: str | None = None
    space: LatentSpace | None = None
    tasks: frozenset[str] = field(default_factory=frozenset)
    latent_image: bool = False

    @property
    def name(self) -> str:
        if self.family:
            return f"MODEL[{self.family}]"
        return f"MODEL[{'+'.join(sorted(self.tasks))}]" if self.tasks else "MODEL"


@dataclass(frozen=True, eq=True)
class OneOf(Type):
    """Any one of several types; written `IMAGE | LATENT`."""

    options: tuple[Type, ...]

    @property
    def name(self) -> str:
        return " or ".join(str(option) for option in self.options)


def _flatten(t: Type) -> tuple[Type, ...]:
    return t.options if isinstance(t, OneOf) else (t,)


INT = Primitive("INT")
FLOAT = Primitive("FLOAT")
STRING = Primitive("STRING")
BOOL = Primitive("BOOL")
SEED = Primitive("SEED")
IMAGE = Data("IMAGE")
MASK = Data("MASK")
LATENT = Latent()
VAE = Vae()
MODEL = Model()

# A SEED is an INT with "random" allowed; INT widens to FLOAT.
_PRIMITIVE_WIDENING = {(INT, FLOAT), (INT, SEED), (SEED, INT)}


def accepts(expected: Type, got: Type) -> bool:
    """True if a value of type `got` may flow into an input of type `expected`."""
    if isinstance(expected, OneOf):
        return any(accepts(option, got) for option in expected.options)
    if isinstance(got, OneOf):
        return all(accepts(expected, option) for option in got.options)
    if expected == got:
        return True
    if isinstance(expected, Primitive):
        return (got, expected) in _PRIMITIVE_WIDENING or (expected == STRING and isinstance(got, Choice))
    if isinstance(expected, Choice):
        return isinstance(got, Choice) and set(got.options) <= set(expected.options)
    if isinstance(expected, (Latent, Vae)) and type(got) is type(expected):
        return expected.space is None or got.space is None or got.space == expected.space
    if isinstance(expected, Model) and isinstance(got, Model):
        if got.family is None:  # not known until run time
            return True
        space_ok = expected.space is None or got.space == expected.space
        return space_ok and expected.tasks <= got.tasks
    return False


def mismatch_hint(expected: Type, got: Type) -> str | None:
    """A suggestion for the most common wiring mistakes."""
    wants = _flatten(expected)
    if isinstance(got, Latent) and IMAGE in wants:
        return "insert a Decode node (with this latent's VAE) to turn the latent into an image"
    if got == IMAGE and any(isinstance(t, Latent) for t in wants):
        return "insert an Encode node (with the VAE of the expected latent space) to turn the image into a latent"
    if isinstance(got, Latent) and any(isinstance(t, Latent) for t in wants):
        return (
            f"latents of space {got.space} cannot be read in another space: Decode with the {got.space} VAE, "
            "then Encode with the target model's VAE"
        )
    if isinstance(got, Model) and isinstance(expected, Model) and expected.tasks - got.tasks:
        missing = ", ".join(sorted(expected.tasks - got.tasks))
        return f"{got} cannot do {missing}; load a model that can"
    return None


# ---- literals -----------------------------------------------------------------

SEED_MAX = 2**64 - 1
RANDOM = "random"


def literal_problem(t: Type, value: object) -> str | None:
    """Why `value` cannot be an inline literal of type `t`, or None if it can."""
    # Exact types: a subclass (numpy's float64, an IntEnum) would not survive keys and files.
    if t == INT:
        ok = type(value) is int
    elif t == FLOAT:
        if type(value) is float and not math.isfinite(value):
            return "a finite number (not NaN or infinity)"
        ok = type(value) in (int, float)
    elif t == STRING:
        if type(value) is str and not is_unicode(value):
            return "text in valid Unicode (it holds bytes that are not UTF-8)"
        ok = type(value) is str
    elif t == BOOL:
        ok = type(value) is bool
    elif t == SEED:
        if type(value) is str and value == RANDOM:
            return None
        ok = type(value) is int and 0 <= value <= SEED_MAX
        if not ok:
            return f"a seed: an integer from 0 to {SEED_MAX}, or \"random\""
    elif isinstance(t, Choice):
        return None if type(value) is str and value in t.options else "one of " + ", ".join(map(repr, t.options))
    elif isinstance(t, OneOf):
        problems = [literal_problem(option, value) for option in t.options]
        return None if None in problems else f"a literal of {t}"
    else:
        return f"a link from another node's output ({t} cannot be written inline)"
    return None if ok else f"a literal of type {t}"


def is_unicode(text: str) -> bool:
    """False for text holding lone surrogates: bytes that were not UTF-8, smuggled in by
    Python's surrogateescape (file names, command-line arguments)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_literal(t: Type, text: str) -> object:
    """Parse command-line text as a literal of type `t`; raises ValueError."""
    if t == SEED and text.strip().lower() == RANDOM:
        return RANDOM
    if t in (INT, SEED):
        if len(text) > 100:
            raise ValueError(f"a number of {len(text)} characters is not one a node can use")
        return int(text)
    if t == FLOAT:
        return float(text)
    if t == BOOL:
        lowered = text.lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"{text!r} is not a boolean (use true or false)")
    if isinstance(t, (Primitive, Choice)):
        return text
    raise ValueError(f"{t} cannot be set from the command line")


def to_json(t: Type) -> dict:
    """The type as the editor and `nodegraph nodes --json` see it."""
    out: dict = {"name": t.name}
    if isinstance(t, Choice):
        out["options"] = list(t.options)
    elif isinstance(t, OneOf):
        out["one_of"] = [to_json(option) for option in t.options]
    elif isinstance(t, (Latent, Vae, Model)) and t.space:
        out["space"] = t.space.name
    if isinstance(t, Model) and t.tasks:
        out["tasks"] = sorted(t.tasks)
    return out

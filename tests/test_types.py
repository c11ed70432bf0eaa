import pytest

from nodegraph import types as T

SD = T.LatentSpace("sd", 4, 0.18215)
XL = T.LatentSpace("sdxl", 4, 0.13025)
SD_MODEL = T.Model("sd", SD, frozenset({"text2img", "img2img"}), latent_image=True)


@pytest.mark.parametrize("expected, got, ok", [
    (T.INT, T.INT, True),
    (T.FLOAT, T.INT, True),
    (T.INT, T.FLOAT, False),
    (T.SEED, T.INT, True),
    (T.INT, T.SEED, True),
    (T.STRING, T.Choice("a", "b"), True),
    (T.Choice("a", "b", "c"), T.Choice("a", "b"), True),
    (T.Choice("a"), T.Choice("a", "b"), False),
    (T.Choice("a"), T.STRING, False),
    (T.IMAGE, T.IMAGE, True),
    (T.IMAGE, T.MASK, False),
    (T.IMAGE, T.Latent(SD), False),
    (T.Latent(SD), T.Latent(SD), True),
    (T.Latent(SD), T.Latent(XL), False),
    (T.LATENT, T.Latent(XL), True),
    (T.Latent(SD), T.LATENT, True),  # space unknown until run time
    (T.Vae(SD), T.Vae(XL), False),
    (T.Latent(SD), T.Vae(SD), False),
    (T.IMAGE | T.Latent(SD), T.Latent(SD), True),
    (T.IMAGE | T.Latent(SD), T.Latent(XL), False),
    (T.IMAGE | T.Latent(SD), T.IMAGE, True),
    (T.IMAGE, T.IMAGE | T.Latent(SD), False),
    (T.Model(tasks=frozenset({"text2img"})), SD_MODEL, True),
    (T.Model(tasks=frozenset({"upscale"})), SD_MODEL, False),
    (T.Model(space=XL), SD_MODEL, False),
    (T.Model(tasks=frozenset({"upscale"})), T.MODEL, True),  # family not known until run time
    (T.MODEL, T.IMAGE, False),
])
def test_compatibility_rules(expected, got, ok):
    assert T.accepts(expected, got) is ok


def test_hints_name_the_node_to_insert():
    assert "Decode" in T.mismatch_hint(T.IMAGE, T.Latent(SD))
    assert "Encode" in T.mismatch_hint(T.Latent(SD), T.IMAGE)
    assert "sd" in T.mismatch_hint(T.Latent(XL), T.Latent(SD))
    assert "upscale" in T.mismatch_hint(T.Model(tasks=frozenset({"upscale"})), SD_MODEL)


@pytest.mark.parametrize("t, value, ok", [
    (T.INT, 3, True), (T.INT, True, False), (T.INT, 2.5, False), (T.FLOAT, 2, True), (T.FLOAT, "2", False),
    (T.STRING, "x", True), (T.BOOL, 1, False), (T.SEED, "random", True), (T.SEED, -1, False),
    (T.SEED, 2**64, False), (T.SEED, 2**64 - 1, True), (T.Choice("a", "b"), "b", True),
    (T.Choice("a", "b"), "c", False), (T.IMAGE, "picture.png", False), (T.INT | T.FLOAT, 1.5, True),
])
def test_literals(t, value, ok):
    assert (T.literal_problem(t, value) is None) is ok


def test_parse_literal_uses_the_declared_type():
    assert T.parse_literal(T.INT, "7") == 7
    assert T.parse_literal(T.FLOAT, "0.5") == 0.5
    assert T.parse_literal(T.BOOL, "yes") is True
    assert T.parse_literal(T.SEED, "random") == "random"
    assert T.parse_literal(T.STRING, "7") == "7"
    with pytest.raises(ValueError):
        T.parse_literal(T.INT, "seven")
    with pytest.raises(ValueError):
        T.parse_literal(T.IMAGE, "x.png")


def test_type_names_show_spaces():
    assert str(T.Latent(SD)) == "LATENT[sd]"
    assert str(T.IMAGE | T.Latent(SD)) == "IMAGE or LATENT[sd]"
    assert T.to_json(T.Choice("a", "b")) == {"name": "CHOICE", "options": ["a", "b"]}

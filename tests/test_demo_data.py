"""The demo model's dataset generator and the probe that judges pictures against captions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from nodes.demo import data, probe

COUNT = 300  # pictures per split in the probe's tests


def single_shape_samples(split: str) -> list[data.Sample]:
    return [s for s in data.samples(split, 0, 2 * COUNT) if len(s.shapes) == 1][:COUNT]


def degrade(image: np.ndarray, rng: np.random.Generator, blur: float, noise: float) -> np.ndarray:
    pixels = ndimage.gaussian_filter(image.astype(np.float32), sigma=(blur, blur, 0))
    return np.clip(np.rint(pixels + rng.normal(0, noise, pixels.shape)), 0, 255).astype(np.uint8)


def accuracy(samples: list[data.Sample], images: list[np.ndarray]) -> tuple[float, float]:
    readings = [probe.read(image) for image in images]
    colour = np.mean([r.colour == s.shapes[0].colour for r, s in zip(readings, samples)])
    shape = np.mean([r.shape == s.shapes[0].kind for r, s in zip(readings, samples)])
    return float(colour), float(shape)


def test_a_sample_is_a_pure_function_of_split_and_index():
    first, again = data.sample(data.TRAIN, 7), data.sample(data.TRAIN, 7)
    assert np.array_equal(first.image, again.image) and first.caption == again.caption
    assert not np.array_equal(first.image, data.sample(data.HELDOUT, 7).image)
    assert first.image.shape == (data.SIZE, data.SIZE, 3) and first.image.dtype == np.uint8


def test_training_never_sees_a_heldout_triple_and_every_heldout_picture_has_one():
    def triples(sample):
        return [(s.colour, s.kind, sample.background) for s in sample.shapes]

    for sample in data.samples(data.TRAIN, 0, 500):
        assert not any(data.is_heldout(*t) for t in triples(sample))
    for sample in data.samples(data.HELDOUT, 0, 200):
        assert any(data.is_heldout(*t) for t in triples(sample))


def test_the_heldout_triples_leave_every_colour_shape_and_background_in_training():
    heldout = data.heldout_triples()
    assert len(heldout) == 16
    for colour in data.COLOURS:
        assert sum(c == colour for c, _, _ in heldout) == 2
    assert len({(c, s) for c, s, _ in heldout}) == len(heldout)
    assert len({(s, b) for _, s, b in heldout}) == len(heldout)


def test_captions_name_the_shapes_left_to_right_in_vocabulary_words():
    words = set(data.vocabulary())
    for sample in data.samples(data.TRAIN, 0, 200):
        assert set(sample.caption.split()) <= words
        assert [s.cx for s in sample.shapes] == sorted(s.cx for s in sample.shapes)
        for shape in sample.shapes:
            assert f"{shape.colour} {shape.kind}" in sample.caption
        assert sample.caption.endswith(f"on a {sample.background} background")
    assert data.sample(data.TRAIN, 3).caption == "an orange square on a white background"


def test_a_mask_covers_its_shape_and_the_shape_is_drawn_in_its_colour():
    for sample in data.samples(data.TRAIN, 0, 50):
        for shape, mask in zip(sample.shapes, sample.masks):
            assert mask.min() >= 0 and mask.max() == 1
            assert np.all(sample.image[mask == 1] == data.COLOURS[shape.colour])
        assert np.all(sample.image[sample.masks.sum(0) == 0] == data.BACKGROUNDS[sample.background])


@pytest.mark.parametrize("split", [data.TRAIN, data.HELDOUT])
def test_the_probe_reads_the_generators_own_pictures(split):
    samples = single_shape_samples(split)
    colour, shape = accuracy(samples, [s.image for s in samples])
    assert colour >= 0.98 and shape >= 0.98


def test_the_probe_reads_blurred_noisy_pictures():
    samples = single_shape_samples(data.HELDOUT)
    rng = np.random.default_rng(0)
    colour, shape = accuracy(samples, [degrade(s.image, rng, blur=1.0, noise=12.0) for s in samples])
    assert colour >= 0.98 and shape >= 0.98


def test_the_probe_finds_no_object_on_a_plain_background():
    plain = np.full((data.SIZE, data.SIZE, 3), data.BACKGROUNDS["gray"], np.uint8)
    assert probe.read(plain).colour is None


def test_colour_share_measures_a_colour_inside_a_region():
    sample = next(s for s in data.samples(data.TRAIN, 0, 20) if len(s.shapes) == 1)
    inside, outside = sample.masks[0] == 1, sample.masks[0] == 0
    assert probe.colour_share(sample.image, inside, sample.shapes[0].colour) == 1.0
    assert probe.colour_share(sample.image, outside, sample.shapes[0].colour) == 0.0


def test_every_caption_word_is_one_token():
    from nodes.demo import model

    tokenizer = model.tokenizer()
    for word in data.vocabulary():
        ids = tokenizer(word).input_ids
        assert len(ids) == 3, (word, tokenizer.convert_ids_to_tokens(ids))  # <|startoftext|> word <|endoftext|>
    caption = data.sample(data.TRAIN, 5).caption
    assert len(tokenizer(caption).input_ids) == len(caption.split()) + 2
    assert tokenizer.model_max_length == 77


def test_the_vae_declares_the_demo_latent_space(tmp_path):
    from diffusers import AutoencoderKL

    from nodes.demo import model

    model.vae().save_pretrained(tmp_path)
    reloaded = AutoencoderKL.from_pretrained(tmp_path)
    assert reloaded.config[model.LATENT_SPACE_KEY] == model.LATENT_SPACE
    assert 2 ** (len(reloaded.config.block_out_channels) - 1) == model.DOWNSAMPLING

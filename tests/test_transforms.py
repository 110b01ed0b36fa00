"""The one image normalisation, shared by the trainer, FastGAN and inference."""

import torch

from focustune.transforms import NORMALISATION, denormalise, normalise


def test_normalised_pixels_span_minus_one_to_one_and_map_back_exactly():
    pixels = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    x = normalise(pixels)
    assert x.dtype == torch.float32 and x.min() == -1.0 and x.max() == 1.0
    assert torch.equal(denormalise(x), pixels)


def test_denormalise_clamps_outside_the_range():
    assert denormalise(torch.tensor([-3.0, 3.0])).tolist() == [0, 255]


def test_normalise_follows_the_recorded_statistics():
    pixels = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    other = {"scale": 255.0, "mean": 0.25, "std": 0.125}
    torch.testing.assert_close(normalise(pixels, other), (pixels.float() / 255.0 - 0.25) / 0.125)
    assert normalise(pixels, NORMALISATION).equal(normalise(pixels))

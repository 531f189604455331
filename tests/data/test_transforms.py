"""Tests of the per-example transforms: geometry, reduced-size JPEG decoding, colour jitter."""
import sgdc_jax  # noqa: F401  (sets XLA flags before jax is used anywhere)

import io

import numpy as np
import pytest
from PIL import Image

from image_examples import PatternSource, encode
from sgdc_jax.data import transforms as T
from sgdc_jax.data.synthetic import generate

MEAN = np.array(T.IMAGENET_MEAN)
STD = np.array(T.IMAGENET_STD)


# --- geometry ---------------------------------------------------------------------------


def test_pillow_geometry_matches_numpy_reference():
  ex = PatternSource(1)[0]
  rng = np.random.default_rng(0)
  for hflip in (False, True):
    for vflip in (False, True):
      for turns in range(4):
        box = T.random_crop_box(rng, 40, 56, (0.4, 1.0))
        resized = T.resize_pair(ex['image'], ex['mask'], (20, 28), box)
        want = T.flip_rotate(*resized, hflip, vflip, turns)
        got = T.crop_flip_rotate(ex['image'], ex['mask'], (20, 28), box, hflip, vflip, turns)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        assert got[0].shape[:2] == ((28, 20) if turns % 2 else (20, 28))


def test_flip_rotate_against_index_arithmetic():
  image = np.arange(2 * 3 * 3).reshape(2, 3, 3)
  mask = image[..., 0]
  out, out_mask = T.flip_rotate(image, mask, True, False, 1)
  # hflip: (r, c) <- (r, W-1-c); rot90 ccw: (r, c) <- (c, W'-1-r) of the flipped image.
  flipped = image[:, ::-1]
  for r in range(3):
    for c in range(2):
      np.testing.assert_array_equal(out[r, c], flipped[c, 2 - r])
  np.testing.assert_array_equal(out_mask, out[..., 0])


def test_random_crop_box_bounds():
  rng = np.random.default_rng(1)
  for _ in range(200):
    x0, y0, x1, y1 = T.random_crop_box(rng, 30, 50, (0.3, 0.9), (0.5, 2.0))
    assert 0 <= x0 < x1 <= 50 and 0 <= y0 < y1 <= 30
    assert (x1 - x0) * (y1 - y0) <= 0.9 * 1500 + 1e-6
  with pytest.raises(ValueError, match='scale'):
    T.random_crop_box(rng, 10, 10, (0.0, 1.0))


def test_check_example_errors():
  ex = PatternSource(1)[0]
  with pytest.raises(ValueError, match="missing field 'mask'"):
    T.check_example({'image': ex['image']}, 'x')
  with pytest.raises(ValueError, match='differs'):
    T.check_example({'image': ex['image'], 'mask': ex['mask'][1:]}, 'x')
  with pytest.raises(ValueError, match='uint8'):
    T.check_example({'image': ex['image'].astype(np.float32), 'mask': ex['mask']}, 'x')
  image, mask = T.check_example({'image': ex['image'], 'mask': ex['mask'][..., None]}, 'x')
  assert mask.shape == ex['mask'].shape


# --- decoding encoded images ------------------------------------------------------------


def test_draft_scale_picks_the_largest_scale_that_keeps_the_output_size():
  assert T.draft_scale((0, 0, 400, 300), (96, 96)) == 2      # 300 / 96 = 3.1
  assert T.draft_scale((10, 5, 810, 805), (96, 96)) == 8     # 800 / 96 = 8.3
  assert T.draft_scale((0, 0, 400, 400), (100, 50)) == 4     # min(400 / 50, 400 / 100)
  assert T.draft_scale((0, 0, 190, 190), (96, 96)) == 1      # 1.98: no reduction
  assert T.draft_scale((0, 0, 96, 96), (96, 96)) == 1


def test_undrafted_decoding_equals_the_array_path_exactly():
  """PNG bytes, and JPEGs that a reduced decode would make too small, give the array result."""
  ex = PatternSource(1, size=(60, 80))[0]
  rng = np.random.default_rng(5)
  jpeg = encode(ex['image'], quality=90)
  decoded_jpeg = np.asarray(Image.open(io.BytesIO(jpeg)))
  for data, pixels in ((encode(ex['image'], 'PNG'), ex['image']), (jpeg, decoded_jpeg)):
    for size in ((40, 40), (24, 56)):      # box / size < 2 in at least one direction
      box = T.random_crop_box(rng, 60, 80, (0.8, 1.0))
      want = T.crop_flip_rotate(pixels, ex['mask'], size, box, True, False, 3)
      image = T.open_encoded(data)
      got = T.crop_flip_rotate(image, ex['mask'], size, box, True, False, 3, draft=True)
      assert image.size == (80, 60)  # decoded at full size
      np.testing.assert_array_equal(got[0], want[0])
      np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(
        T.resize_pair(T.open_encoded(data), ex['mask'], (32, 48), draft=True)[0],
        T.resize_pair(pixels, ex['mask'], (32, 48))[0])


def test_draft_decoding_is_close_to_full_decode_and_resize():
  """Stated tolerance (uint8 grey levels, JPEG quality 90 lesion images, reduction 2-8x):
  mean |difference| <= 1.0, 99th percentile <= 10, mean signed difference <= 0.25; the
  mask is unaffected (always decoded in full)."""
  rng = np.random.default_rng(0)
  scales = set()
  for k, (height, width) in enumerate(((480, 640), (601, 799), (300, 400))):
    ex = generate(3, k, height, width)
    data = encode(ex['image'], quality=90)
    for size in ((48, 48), (96, 96), (64, 96)):
      for box in (None, T.random_crop_box(rng, height, width, (0.3, 1.0))):
        image = T.open_encoded(data)
        got, got_mask = T.crop_flip_rotate(image, ex['mask'], size, box, False, True, 1,
                                           draft=True)
        scales.add(round(width / image.size[0]))
        want, want_mask = T.crop_flip_rotate(T.open_encoded(data), ex['mask'], size, box,
                                             False, True, 1, draft=False)
        np.testing.assert_array_equal(got_mask, want_mask)
        diff = got.astype(np.float64) - want
        assert np.abs(diff).mean() <= 1.0
        assert np.percentile(np.abs(diff), 99) <= 10
        assert abs(diff.mean()) <= 0.25
  assert scales >= {2, 4, 8}  # every reduction was exercised


def test_draft_decoding_keeps_edges_in_place():
  """A bright rectangle's area and centroid agree with the full decode (< 0.05 px, < 1 %)."""
  height, width = 600, 800
  image = np.full((height, width, 3), 40, np.uint8)
  image[150:391, 203:517] = 220
  mask = (image[..., 0] > 128).astype(np.uint8)
  data = encode(image, quality=95)

  def area_and_centroid(pixels):
    weight = (pixels.astype(np.float64).mean(-1) - 40) / 180
    ys, xs = np.mgrid[:pixels.shape[0], :pixels.shape[1]] + 0.5
    return weight.sum(), (weight * xs).sum() / weight.sum(), (weight * ys).sum() / weight.sum()

  for box in ((37.5, 21.25, 737.5, 571.25), (100.3, 60.7, 640.1, 480.9), None):
    for size in (48, 80):
      drafted = T.open_encoded(data)
      got = area_and_centroid(T.resize_pair(drafted, mask, (size, size), box, draft=True)[0])
      assert drafted.size[0] < width
      want = area_and_centroid(T.resize_pair(T.open_encoded(data), mask, (size, size), box)[0])
      assert abs(got[0] / want[0] - 1) < 0.01
      assert abs(got[1] - want[1]) < 0.05 and abs(got[2] - want[2]) < 0.05


def test_encoded_image_errors_name_the_example():
  ex = PatternSource(1)[0]
  with pytest.raises(ValueError, match='rec 7: cannot read'):
    T.open_example({'image': b'not an image', 'mask': ex['mask']}, 'rec 7')
  grey = encode(ex['image'][..., 0], quality=90)
  with pytest.raises(ValueError, match="rec 7: encoded image has mode 'L'"):
    T.open_example({'image': grey, 'mask': ex['mask']}, 'rec 7')
  jpeg = encode(ex['image'], quality=90)
  with pytest.raises(ValueError, match='rec 7: mask size'):
    T.open_example({'image': jpeg, 'mask': ex['mask'][:, 1:]}, 'rec 7')
  image, mask = T.open_example({'image': jpeg[:len(jpeg) // 2], 'mask': ex['mask']}, 'rec 7')
  with pytest.raises(ValueError, match='rec 7: cannot decode'):
    T.resize_pair(image, mask, (20, 28), where='rec 7')


# --- colour -----------------------------------------------------------------------------


def test_normalise_matches_reference():
  image = np.random.default_rng(2).integers(0, 256, (5, 7, 3)).astype(np.uint8)
  want = (image / 255.0 - MEAN) / STD
  np.testing.assert_allclose(T.normalise(image), want, atol=1e-5)
  np.testing.assert_allclose(T.normalise(image / 255.0), want, atol=1e-5)
  assert T.normalise(image).dtype == np.float32


def test_colour_jitter_reference_cases():
  rng = np.random.default_rng(3)
  image = rng.uniform(0.2, 0.6, (6, 9, 3)).astype(np.float32)
  np.testing.assert_allclose(T.colour_jitter(image, rng), image, atol=1e-6)
  # Brightness only: one common factor.
  out = T.colour_jitter(image, rng, brightness=0.3)
  ratio = out / image
  assert np.ptp(ratio) < 1e-5 and 0.7 <= ratio.mean() <= 1.3
  # Hue only: luma (Y of YIQ) is unchanged.
  luma = np.array([0.299, 0.587, 0.114])
  out = T.colour_jitter(image * 0.8 + 0.1, rng, hue=0.05)
  np.testing.assert_allclose(out @ luma, (image * 0.8 + 0.1) @ luma, atol=1e-5)
  assert np.abs(out - (image * 0.8 + 0.1)).max() > 1e-3
  # Contrast only: the mean luma stays, deviations from it scale by one factor.
  out = T.colour_jitter(image, np.random.default_rng(4), contrast=0.5)
  m = (image @ luma).mean()
  factor = (out - m) / (image - m)
  assert np.ptp(factor) < 1e-3 and abs(factor.mean() - 1) > 1e-3


@pytest.mark.parametrize('strengths', [
    dict(brightness=0.4), dict(contrast=0.5), dict(saturation=0.6), dict(hue=0.1),
    dict(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02)])
def test_colour_jitter_uint8_is_the_rounded_float_jitter(strengths):
  image = generate(0, 4, 40, 56)['image']
  image[:4] = 255  # saturated rows: the clip at white is exercised
  for seed in range(4):
    float_rng, uint8_rng = np.random.default_rng(seed), np.random.default_rng(seed)
    want = 255 * T.colour_jitter(image.astype(np.float32) / 255, float_rng, **strengths)
    got = T.colour_jitter_uint8(image, uint8_rng, **strengths)
    assert got.dtype == np.uint8 and got.shape == image.shape
    assert np.abs(got - want.astype(np.float64)).max() <= 0.5 + 1e-3
    assert np.abs(got.astype(int) - image).max() > 0   # something changed
    assert float_rng.uniform() == uint8_rng.uniform()  # the same draws were consumed


def test_colour_jitter_uint8_without_jitter_is_the_identity():
  image = generate(0, 5, 20, 30)['image']
  np.testing.assert_array_equal(T.colour_jitter_uint8(image, np.random.default_rng(0)), image)


# --- patch training ---------------------------------------------------------------------


@pytest.mark.parametrize('stored,crop', [((50, 70), (32, 32)), ((32, 32), (32, 32)),
                                         ((20, 9), (32, 32)), ((40, 100), (64, 32)),
                                         ((1, 1), (32, 64))])
def test_random_patch_windows_lie_in_the_image_or_hold_all_of_it(stored, crop):
  rng = np.random.default_rng(0)
  for _ in range(20):
    box, content, offset = T.random_patch(rng, *stored, crop)
    x0, y0, x1, y1 = box
    for side in range(2):
      lo, hi, n = (y0, y1, stored[0]) if side == 0 else (x0, x1, stored[1])
      assert content[side] == min(crop[side], n)
      assert 0 <= lo < hi <= n and float(lo).is_integer() and hi - lo == content[side]
      assert 0 <= offset[side] <= crop[side] - content[side]
      assert offset[side] == 0 or n < crop[side]


def test_random_patch_scale_jitter_scales_the_example_within_range():
  rng = np.random.default_rng(1)
  sides = set()
  for _ in range(50):
    # A side shorter than the window is taken whole: its content is the scaled size.
    _, content, _ = T.random_patch(rng, 40, 300, (64, 64), (0.75, 1.25))
    assert 30 <= content[0] <= 50 and content[1] == 64
    sides.add(content[0])
    box, content, _ = T.random_patch(rng, 200, 200, (64, 64), (0.5, 2.0))
    scale = content[1] / (box[2] - box[0])  # output pixels per stored pixel
    assert 0.5 - 1e-6 <= scale <= 2.0 + 1e-6 and box[2] <= 200 and box[3] <= 200
  assert len(sides) > 5  # the factor varies


def test_place_in_window_equals_padding_then_flipping_and_turning():
  rng = np.random.default_rng(2)
  for window, content in (((8, 8), (3, 5)), ((8, 12), (8, 4)), ((6, 6), (6, 2))):
    for hflip in (False, True):
      for vflip in (False, True):
        for turns in range(4) if window[0] == window[1] else (0, 2):
          top = int(rng.integers(window[0] - content[0] + 1))
          left = int(rng.integers(window[1] - content[1] + 1))
          image = rng.uniform(1, 2, content + (3,)).astype(np.float32)
          mask = rng.integers(1, 3, content).astype(np.uint8)
          padded = np.zeros(window + (3,), np.float32), np.zeros(window, np.uint8)
          padded[0][top:top + content[0], left:left + content[1]] = image
          padded[1][top:top + content[0], left:left + content[1]] = mask
          want = T.flip_rotate(*padded, hflip, vflip, turns)
          got = T.place_in_window(*T.flip_rotate(image, mask, hflip, vflip, turns), window,
                                  (top, left), hflip, vflip, turns)
          np.testing.assert_array_equal(got[0], want[0])
          np.testing.assert_array_equal(got[1], want[1])


def test_crop_patch_cuts_whole_pixel_windows_exactly_from_arrays_and_bytes():
  ex = PatternSource(1, size=(40, 56))[0]
  png = encode(ex['image'], 'PNG')
  for image in (ex['image'], Image.open(io.BytesIO(png))):
    got, mask = T.crop_patch(image, ex['mask'], (5, 3, 37, 35), (32, 32), True, False, 1)
    want = T.flip_rotate(ex['image'][3:35, 5:37], ex['mask'][3:35, 5:37], True, False, 1)
    np.testing.assert_array_equal(got, want[0])
    np.testing.assert_array_equal(mask, want[1])

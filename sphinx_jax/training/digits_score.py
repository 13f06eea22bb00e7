"""The training data of the digits prior, and a score for its samples.

The data are scikit-learn's bundled handwritten digits (`load_digits`: 1,797
8x8 images with values 0..16, shipped inside the package), upscaled with
Lanczos to the generator's resolution and mapped to [-1, 1]. A sample is
scored by area-downsampling it back to 8x8 and classifying it with a
logistic regression fitted on real digits that went through the same path:
a generator of recognisable, varied digits gets confident predictions spread
over all ten classes. Held-out real digits give the reference score.
"""

import dataclasses
import math

import jax
import numpy as np

from sphinx_jax.errors import SphinxError

DATA = ("scikit-learn's load_digits (1,797 handwritten 8x8 digits, values "
        '0..16), Lanczos-upscaled, mapped to [-1, 1], replicated to RGB')
# A class counts as covered when it gets at least this share of the samples:
# a stray prediction or two is not coverage.
COVERAGE_SHARE = 0.01


def _sklearn():
  try:
    import sklearn.datasets  # pylint: disable=g-import-not-at-top
    import sklearn.linear_model  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise SphinxError("training a prior needs scikit-learn: pip install -e "
                      "'.[train]'") from None
  return sklearn


def load_digits(resolution: int) -> tuple[np.ndarray, np.ndarray]:
  """(images (N, R, R) float32 in [-1, 1], labels (N,)) at `resolution`."""
  digits = _sklearn().datasets.load_digits()
  small = digits.images.astype(np.float32) / 8.0 - 1.0
  big = jax.image.resize(small, (len(small), resolution, resolution), 'lanczos3')
  # Lanczos rings slightly past the range of the data.
  return np.clip(np.asarray(big), -1.0, 1.0), digits.target


def to_8x8(images: np.ndarray) -> np.ndarray:
  """(N, R, R[, C]) in [-1, 1] -> (N, 64) in load_digits' 0..16 units, by
  averaging channels and each (R/8)^2 block of pixels."""
  images = np.asarray(images, np.float32)
  if images.ndim == 4:
    images = images.mean(axis=-1)
  n, r = images.shape[:2]
  f = r // 8
  small = images.reshape(n, 8, f, 8, f).mean(axis=(2, 4))
  return ((np.clip(small, -1.0, 1.0) + 1.0) * 8.0).reshape(n, 64)


@dataclasses.dataclass(frozen=True)
class Score:
  """How digit-like a set of images looks to the classifier.

  Attributes:
    confidence: mean of the highest class probability (1: certain).
    entropy: entropy of the predicted-class histogram in bits (log2(10) =
      3.32 when the classes are equally frequent).
    coverage: classes predicted for at least COVERAGE_SHARE of the images.
    n: number of images.
  """
  confidence: float
  entropy: float
  coverage: int
  n: int

  def __str__(self) -> str:
    return (f'confidence {self.confidence:.3f}, class entropy '
            f'{self.entropy:.2f}/{math.log2(10):.2f} bits, '
            f'{self.coverage}/10 classes (n={self.n})')


class DigitScorer:
  """A logistic regression on real digits, scoring images at any resolution.

  Args:
    images: (N, R, R) real digits as the generator sees them (`load_digits`).
    labels: (N,) their classes. The even-indexed images are fitted after the
      round trip to 8x8; the odd-indexed ones are held out for `reference`.
  """

  def __init__(self, images: np.ndarray, labels: np.ndarray):
    self.classifier = _sklearn().linear_model.LogisticRegression(max_iter=2000)
    # Scaled to [0, 1] so the solver converges quickly.
    self.classifier.fit(to_8x8(images[0::2]) / 16.0, labels[0::2])
    self.reference = self.score(images[1::2])

  def score(self, images: np.ndarray) -> Score:
    """Scores (N, R, R[, 3]) images in [-1, 1]."""
    probs = self.classifier.predict_proba(to_8x8(images) / 16.0)
    counts = np.bincount(probs.argmax(axis=1), minlength=10)
    share = counts / counts.sum()
    nonzero = share[share > 0]
    return Score(confidence=float(probs.max(axis=1).mean()),
                 entropy=float((nonzero * np.log2(1.0 / nonzero)).sum()),
                 coverage=int((share >= COVERAGE_SHARE).sum()),
                 n=len(probs))

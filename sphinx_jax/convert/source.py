"""The record every checkpoint reader returns."""

import dataclasses
from typing import Any, Optional

import numpy as np

from sphinx_jax.models.stylegan2 import Architecture


@dataclasses.dataclass
class Source:
  """A generator read from a checkpoint, in the canonical layout.

  Attributes:
    arch: the architecture, inferred from the tensors and checked against
      what the checkpoint records.
    params: the canonical parameter tree (`models.stylegan2.StyleGAN2`).
    noise: the constant noise maps as (r, r) arrays in rosinality order, or
      None when the checkpoint stores none.
    w_avg: the average w, or None when the checkpoint stores none.
    format: names the source format in `generator.json`, e.g.
      'rosinality-zip', 'stylegan2-ada-pytorch', 'tensorflow'.
  """
  arch: Architecture
  params: dict[str, Any]
  noise: Optional[list[np.ndarray]]
  w_avg: Optional[np.ndarray]
  format: str

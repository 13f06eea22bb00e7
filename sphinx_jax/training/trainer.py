"""Training the small digits StyleGAN2 prior, on `TrainSettings`.

The generator is exactly `stylegan2.StyleGAN2`, so the exported directory
loads with `load_generator`. The recipe is NVIDIA's StyleGAN2 (config F, as
stylegan2-ada-pytorch runs it without augmentation): the residual
discriminator of discriminator.py, the non-saturating logistic loss, lazy R1
on the reals every `r1_interval` D steps (weight scaled by the interval, with
NVIDIA's lr/beta adjustment of D's Adam), style mixing, an EMA of G's
parameters (what gets exported) and w_avg tracked as an EMA of w. Path-length
regularisation is omitted, so G's Adam is unadjusted.

Every draw (the batch of reals, z, mixing, noise) comes from a key derived
from (seed, step), and the state is checkpointed with Orbax in
`<workdir>/checkpoints`: training again on the same workdir resumes from the
latest checkpoint and ends with exactly the result of an uninterrupted run.
"""

import dataclasses
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sphinx_jax.errors import SphinxError
from sphinx_jax.files.checkpoints import Checkpoints
from sphinx_jax.files.generator_dir import save_generator
from sphinx_jax.models.discriminator import Discriminator, r1_penalty
from sphinx_jax.models.generator import Generator
from sphinx_jax.models.stylegan2 import Architecture, StyleGAN2
from sphinx_jax.runtime.compile_options import jit_run_once
from sphinx_jax.training import digits_score

W_AVG_BETA = 0.995  # NVIDIA's w_avg tracking
# Fields that may change between reruns on one workdir; any other change is
# refused, as it would silently mix two runs.
_RERUN_FIELDS = ('steps', 'workdir', 'export_dir', 'checkpoint_every',
                 'keep_checkpoints', 'export_every', 'log_every',
                 'score_samples')

State = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class TrainSettings:
  """Every field of configs/train_prior.py, typed (its comments say what
  each one means)."""
  resolution: int
  z_dim: int
  w_dim: int
  n_mlp: int
  channel_base: int
  channel_max: int
  batch_size: int
  steps: int
  g_lr: float
  d_lr: float
  r1_gamma: float
  r1_interval: int
  style_mixing_prob: float
  ema_kimg: float
  ema_rampup: float
  seed: int
  workdir: str
  export_dir: str
  checkpoint_every: int
  keep_checkpoints: int
  export_every: int
  log_every: int
  score_samples: int


def fingerprint(settings: TrainSettings) -> dict[str, Any]:
  """The settings a run's result depends on."""
  return {k: v for k, v in dataclasses.asdict(settings).items()
          if k not in _RERUN_FIELDS}


class Trainer:
  """The model, optimisers and jitted steps for one set of settings.

  A training state is a dict: `step` (steps done), `g`, `d`, `g_ema`
  (parameter trees), `g_opt`, `d_opt` (Adam states), `w_avg` and `key` (the
  key data every step's key is derived from).
  """

  def __init__(self, settings: TrainSettings):
    self.settings = s = settings
    self.arch = Architecture.standard(s.resolution, s.z_dim, s.w_dim, s.n_mlp,
                                      s.channel_base, s.channel_max)
    self.g = StyleGAN2(self.arch)
    self.d = Discriminator(self.arch.channels)
    self.g_opt = optax.adam(s.g_lr, b1=0.0, b2=0.99, eps=1e-8)
    # Lazy regularisation: D also updates on R1 every r1_interval steps, so its
    # lr and betas are scaled to keep the same effective rate (NVIDIA's).
    ratio = s.r1_interval / (s.r1_interval + 1)
    self.d_opt = optax.adam(s.d_lr * ratio, b1=0.0, b2=0.99**ratio, eps=1e-8)
    init_key, self.base_key = jax.random.split(jax.random.key(s.seed))
    # G's and D's parameters, the constant noise maps, the z of scored samples.
    self.init_keys = jax.random.split(init_key, 4)
    # Noise maps the exported generator uses by default (NVIDIA's noise_const).
    self.noise_const = tuple(
        jax.random.normal(k, (r, r)) for k, r in zip(
            jax.random.split(self.init_keys[2], len(self.arch.noise_resolutions)),
            self.arch.noise_resolutions))
    # Jitted: initialising op by op costs seconds of dispatch and compilation.
    self.init_state = jit_run_once(self._init_state)
    self.g_step = jax.jit(self._g_step)
    self.d_step = jax.jit(self._d_step, static_argnames='regularize')
    self.sample = jax.jit(self._sample)

  def _init_state(self) -> State:
    res = self.arch.resolution
    g = self.g.init(self.init_keys[0], jnp.zeros((1, self.arch.z_dim)))['params']
    d = self.d.init(self.init_keys[1], jnp.zeros((1, res, res, 3)))['params']
    return {'step': jnp.zeros((), jnp.int32), 'g': g, 'd': d, 'g_ema': g,
            'g_opt': self.g_opt.init(g), 'd_opt': self.d_opt.init(d),
            'w_avg': jnp.zeros((self.arch.w_dim,)),
            'key': jax.random.key_data(self.base_key)}

  def generator(self, state: State) -> Generator:
    """The EMA generator: what gets exported."""
    return Generator(arch=self.arch, params=state['g_ema'], w_avg=state['w_avg'],
                     noise_const=self.noise_const)

  def _keys(self, state: State) -> tuple[jax.Array, jax.Array, jax.Array]:
    """This step's keys for the reals, D's fakes and G's fakes."""
    key = jax.random.fold_in(jax.random.wrap_key_data(state['key']),
                             state['step'])
    return tuple(jax.random.split(key, 3))

  def fakes(self, g_params, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(images (B, R, R, 3), w (B, w_dim)) for fresh z, mixing and noise."""
    arch, batch = self.arch, self.settings.batch_size
    mixing_prob = self.settings.style_mixing_prob
    k_z, k_mix, k_cut, k_z2, k_noise = jax.random.split(key, 5)

    def mapping(k):
      z = jax.random.normal(k, (batch, arch.z_dim))
      return self.g.apply({'params': g_params}, z, method=StyleGAN2.mapping)

    w = mapping(k_z)
    wplus = jnp.repeat(w[:, None], arch.n_latent, axis=1)
    if mixing_prob > 0:
      # As NVIDIA's: one decision and one cutoff layer for the whole batch.
      cutoff = jax.random.randint(k_cut, (), 1, arch.n_latent)
      cutoff = jnp.where(jax.random.uniform(k_mix) < mixing_prob, cutoff,
                         arch.n_latent)
      rows = jnp.arange(arch.n_latent)[None, :, None]
      wplus = jnp.where(rows < cutoff, wplus, mapping(k_z2)[:, None])
    noise = [jax.random.normal(k, (batch, r, r, 1)) for k, r in zip(
        jax.random.split(k_noise, len(arch.noise_resolutions)),
        arch.noise_resolutions)]
    img = self.g.apply({'params': g_params}, wplus, noise,
                       method=StyleGAN2.synthesize)
    return img, w

  def _reals(self, reals: jax.Array, key: jax.Array) -> jax.Array:
    idx = jax.random.choice(key, reals.shape[0], (self.settings.batch_size,),
                            replace=False)
    return jnp.repeat(reals[idx][..., None], 3, axis=-1)

  def _logits(self, d_params, img: jax.Array) -> jax.Array:
    return self.d.apply({'params': d_params}, img)

  def _d_step(self, state: State, reals: jax.Array, regularize: bool
              ) -> tuple[State, dict[str, jax.Array]]:
    """D's logistic loss on fresh fakes and a batch of `reals` (N, R, R); with
    `regularize`, a second update on the lazy R1 penalty."""
    k_real, k_fake, _ = self._keys(state)
    fake, _ = self.fakes(state['g'], k_fake)
    real = self._reals(reals, k_real)

    def loss_fn(d_params):
      return (jax.nn.softplus(self._logits(d_params, fake)).mean() +
              jax.nn.softplus(-self._logits(d_params, real)).mean())

    loss, grads = jax.value_and_grad(loss_fn)(state['d'])
    updates, d_opt = self.d_opt.update(grads, state['d_opt'])
    d = optax.apply_updates(state['d'], updates)
    metrics = {'loss_d': loss}
    if regularize:
      interval, gamma = self.settings.r1_interval, self.settings.r1_gamma

      def r1_fn(d_params):
        r1 = r1_penalty(lambda x: self._logits(d_params, x), real).mean()
        return r1 * (gamma / 2) * interval, r1

      (_, r1), grads = jax.value_and_grad(r1_fn, has_aux=True)(d)
      updates, d_opt = self.d_opt.update(grads, d_opt)
      d = optax.apply_updates(d, updates)
      metrics['r1'] = r1
    return {**state, 'd': d, 'd_opt': d_opt}, metrics

  def _g_step(self, state: State) -> tuple[State, dict[str, jax.Array]]:
    """G's non-saturating loss; then w_avg, the EMA and the step counter."""
    _, _, k_fake = self._keys(state)

    def loss_fn(g_params):
      img, w = self.fakes(g_params, k_fake)
      return jax.nn.softplus(-self._logits(state['d'], img)).mean(), w

    (loss, w), grads = jax.value_and_grad(loss_fn, has_aux=True)(state['g'])
    updates, g_opt = self.g_opt.update(grads, state['g_opt'])
    g = optax.apply_updates(state['g'], updates)
    w_mean = jax.lax.stop_gradient(w).mean(axis=0)
    w_avg = w_mean + W_AVG_BETA * (state['w_avg'] - w_mean)
    # NVIDIA's EMA: half-life ema_kimg, ramped up to ema_rampup x images seen.
    batch, rampup = self.settings.batch_size, self.settings.ema_rampup
    ema_nimg = self.settings.ema_kimg * 1000.0
    if rampup > 0:
      ema_nimg = jnp.minimum(ema_nimg, state['step'] * batch * rampup)
    beta = 0.5 ** (batch / jnp.maximum(ema_nimg, 1e-8))
    g_ema = jax.tree_util.tree_map(lambda e, p: p + beta * (e - p),
                                   state['g_ema'], g)
    return ({**state, 'g': g, 'g_opt': g_opt, 'g_ema': g_ema, 'w_avg': w_avg,
             'step': state['step'] + 1}, {'loss_g': loss})

  def train_step(self, state: State, reals: jax.Array, step: int
                 ) -> tuple[State, dict[str, jax.Array]]:
    """One D step (with R1 every r1_interval steps), then one G step.

    `step` is `state['step']` as a Python int, given so that choosing the
    R1 steps does not wait for the device.
    """
    regularize = (self.settings.r1_gamma > 0 and
                  step % self.settings.r1_interval == 0)
    state, d_metrics = self.d_step(state, reals, regularize=regularize)
    state, g_metrics = self.g_step(state)
    return state, {**d_metrics, **g_metrics}

  @staticmethod
  def _sample(g: Generator, z: jax.Array) -> jax.Array:
    w = g.mapping(z)
    return g.synthesize(jnp.repeat(w[:, None], g.n_latent, axis=1))

  def samples(self, state: State, num: int) -> np.ndarray:
    """(num, R, R, 3) images from the EMA generator, fixed z, stored noise."""
    z = jax.random.normal(self.init_keys[3], (num, self.arch.z_dim))
    return np.asarray(self.sample(self.generator(state), z))


def export(trainer: Trainer, state: State, out_dir: str,
           info: dict[str, Any]) -> None:
  """Writes the EMA generator to `out_dir`, replacing an earlier export once
  complete."""
  save_generator(trainer.generator(state), out_dir, info)


def _resume(trainer: Trainer, checkpoints: Checkpoints) -> tuple[State, float]:
  """The latest checkpoint's (state, seconds trained), or a fresh state."""
  settings = trainer.settings
  step = checkpoints.latest_step()
  if step is None:
    return trainer.init_state(), 0.0
  # The settings are compared before the arrays are read, whose shapes they
  # may have changed.
  meta = checkpoints.meta(step)
  for field, value in fingerprint(settings).items():
    if meta['config'].get(field) != value:
      raise SphinxError(
          f'{settings.workdir}: holds a run with {field} = '
          f'{meta["config"].get(field)!r}, this config has {value!r} (use '
          'another workdir)')
  if step > settings.steps:
    raise SphinxError(f'{settings.workdir}: its checkpoint is after step '
                      f'{step}, beyond config.steps = {settings.steps}')
  state = checkpoints.restore(step, jax.eval_shape(trainer.init_state))
  print(f'resuming from the checkpoint after step {step} in '
        f'{settings.workdir}', file=sys.stderr)
  # Uncommitted arrays, as a fresh state's are: a committed array's sharding
  # is part of the compiled steps, which would then miss the compilation cache.
  state = jax.tree_util.tree_map(jnp.asarray, jax.device_get(state))
  return state, float(meta['seconds'])


def train(settings: TrainSettings) -> State:
  """Trains (or resumes) to `settings.steps`; returns the final state."""
  s = settings
  trainer = Trainer(s)
  checkpoints = Checkpoints(os.path.join(s.workdir, 'checkpoints'),
                            s.keep_checkpoints)
  try:
    state, seconds_before = _resume(trainer, checkpoints)
    images, labels = digits_score.load_digits(s.resolution)
    scorer = digits_score.DigitScorer(images, labels)
    print(f'real digits (held out): {scorer.reference}', flush=True)
    reals = jnp.asarray(images)
    run_start = time.perf_counter()

    def meta():  # seconds: wall time of every run on this workdir
      return {'config': fingerprint(s),
              'seconds': seconds_before + time.perf_counter() - run_start}

    def export_now():
      score = scorer.score(trainer.samples(state, s.score_samples))
      export(trainer, state, s.export_dir, {
          'source': {'trainer': 'sphinx_jax.train_prior',
                     'data': digits_score.DATA, 'steps': step,
                     'kimg': step * s.batch_size / 1000,
                     'seconds': round(meta()['seconds'], 1),
                     'config': dataclasses.asdict(s), 'score': str(score),
                     'reference_score': str(scorer.reference)},
          'w_avg': f'tracked in training: EMA of w (beta {W_AVG_BETA})'})
      print(f'exported step {step} to {s.export_dir}', flush=True)

    step = int(state['step'])
    last = {}  # the latest value of each metric (R1: every r1_interval steps)
    tick, tick_step = time.perf_counter(), step
    while step < s.steps:
      state, metrics = trainer.train_step(state, reals, step)
      step += 1
      last.update(metrics)
      if step % s.log_every == 0 or step == s.steps:
        jax.block_until_ready(state)
        rate = (step - tick_step) / (time.perf_counter() - tick)
        values = ' '.join(f'{k} {float(v):.4f}' for k, v in sorted(last.items()))
        score = scorer.score(trainer.samples(state, s.score_samples))
        print(f'step {step}/{s.steps} kimg {step * s.batch_size / 1000:.1f} '
              f'{values} {rate:.2f} steps/s | samples: {score}', flush=True)
      if s.checkpoint_every and step % s.checkpoint_every == 0:
        checkpoints.save(step, state, meta())
      if s.export_every and step % s.export_every == 0 and step < s.steps:
        export_now()
      if step % s.log_every == 0:  # scoring and saving are not training
        tick, tick_step = time.perf_counter(), step
    checkpoints.save(step, state, meta())
    export_now()
  finally:
    checkpoints.close()
  return state

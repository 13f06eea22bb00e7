"""Trains a small StyleGAN2 prior on digits: `python -m sphinx_jax.train_prior`.

  python -m sphinx_jax.train_prior --config configs/train_prior.py [--config.key=value ...]

The generator is exactly `stylegan2.StyleGAN2`, so the exported directory
loads with `load_generator`. The recipe is NVIDIA's StyleGAN2 (config F, as
stylegan2-ada-pytorch runs it without augmentation): the residual
discriminator of discriminator.py, the non-saturating logistic loss, lazy R1
on the reals every `r1_interval` D steps (weight scaled by the interval, with
NVIDIA's lr/beta adjustment of D's Adam), style mixing, an EMA of G's
parameters (what gets exported) and w_avg tracked as an EMA of w. Path-length
regularisation is omitted, so G's Adam is unadjusted.

Every draw (the batch of reals, z, mixing, noise) comes from a key derived
from (seed, step), and the state is checkpointed with Orbax in `workdir`:
rerunning the same command resumes from the latest checkpoint and ends with
exactly the result of an uninterrupted run.
"""

import math
import os
import sys
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

from sphinx_jax import cli
from sphinx_jax.training import digits_score
from sphinx_jax.models.discriminator import Discriminator, r1_penalty
from sphinx_jax.errors import SphinxError, check_fields
from sphinx_jax.files.generator_dir import save_generator
from sphinx_jax.models.generator import Generator
from sphinx_jax.models.stylegan2 import Architecture, StyleGAN2

W_AVG_BETA = 0.995  # NVIDIA's w_avg tracking
# Fields that may change between reruns on one workdir; any other change is
# refused, as it would silently mix two runs.
_RERUN_FIELDS = ('steps', 'workdir', 'export_dir', 'checkpoint_every',
                 'keep_checkpoints', 'export_every', 'log_every',
                 'score_samples')

State = dict[str, Any]


def validate(config) -> None:
  """Fails before any work, naming the offending field."""
  res = config.resolution
  checks = (
      ('resolution', res >= 8 and math.log2(res) == int(math.log2(res)),
       'a power of two >= 8'),
      ('z_dim', config.z_dim >= 1, 'at least 1'),
      ('w_dim', config.w_dim >= 1, 'at least 1'),
      ('n_mlp', config.n_mlp >= 1, 'at least 1'),
      ('channel_base', config.channel_base >= res, 'at least resolution'),
      ('channel_max', config.channel_max >= 1, 'at least 1'),
      ('batch_size', config.batch_size >= 4 and config.batch_size % 4 == 0,
       'a positive multiple of 4'),
      ('steps', config.steps >= 1, 'at least 1'),
      ('g_lr', config.g_lr > 0, 'positive'),
      ('d_lr', config.d_lr > 0, 'positive'),
      ('r1_gamma', config.r1_gamma >= 0, 'non-negative'),
      ('r1_interval', config.r1_interval >= 1, 'at least 1'),
      ('style_mixing_prob', 0 <= config.style_mixing_prob <= 1, 'in [0, 1]'),
      ('ema_kimg', config.ema_kimg >= 0, 'non-negative'),
      ('ema_rampup', config.ema_rampup >= 0, 'non-negative (0: no ramp)'),
      ('workdir', bool(config.workdir), 'a directory'),
      ('export_dir', bool(config.export_dir), 'a directory'),
      ('checkpoint_every', config.checkpoint_every >= 0, 'non-negative'),
      ('keep_checkpoints', config.keep_checkpoints >= 1, 'at least 1'),
      ('export_every', config.export_every >= 0, 'non-negative'),
      ('log_every', config.log_every >= 1, 'at least 1'),
      ('score_samples', config.score_samples >= 1, 'at least 1'),
  )
  check_fields(config, checks)
  export = config.export_dir
  if (os.path.isdir(export) and os.listdir(export) and
      not os.path.exists(os.path.join(export, 'generator.json'))):
    raise SphinxError(f'config.export_dir = {export!r}: exists and is not a '
                      'generator directory (choose another)')


def architecture(config) -> Architecture:
  resolutions = [2**i for i in range(2, int(math.log2(config.resolution)) + 1)]
  return Architecture(
      resolution=config.resolution, z_dim=config.z_dim, w_dim=config.w_dim,
      n_mlp=config.n_mlp,
      channels=tuple((r, min(config.channel_base // r, config.channel_max))
                     for r in resolutions))


def fingerprint(config) -> dict[str, Any]:
  """The settings a run's result depends on."""
  return {k: v for k, v in config.to_dict().items() if k not in _RERUN_FIELDS}


class Trainer:
  """The model, optimisers and jitted steps for one config.

  A training state is a dict: `step` (steps done), `g`, `d`, `g_ema`
  (parameter trees), `g_opt`, `d_opt` (Adam states), `w_avg` and `key` (the
  key data every step's key is derived from).
  """

  def __init__(self, config):
    self.config = config
    self.arch = architecture(config)
    self.g = StyleGAN2(self.arch)
    self.d = Discriminator(self.arch.channels)
    self.g_opt = optax.adam(config.g_lr, b1=0.0, b2=0.99, eps=1e-8)
    # Lazy regularisation: D also updates on R1 every r1_interval steps, so its
    # lr and betas are scaled to keep the same effective rate (NVIDIA's).
    ratio = config.r1_interval / (config.r1_interval + 1)
    self.d_opt = optax.adam(config.d_lr * ratio, b1=0.0, b2=0.99**ratio,
                            eps=1e-8)
    init_key, self.base_key = jax.random.split(jax.random.key(config.seed))
    # G's and D's parameters, the constant noise maps, the z of scored samples.
    self.init_keys = jax.random.split(init_key, 4)
    # Noise maps the exported generator uses by default (NVIDIA's noise_const).
    self.noise_const = tuple(
        jax.random.normal(k, (r, r)) for k, r in zip(
            jax.random.split(self.init_keys[2], len(self.arch.noise_resolutions)),
            self.arch.noise_resolutions))
    # Jitted: initialising op by op costs seconds of dispatch and compilation.
    self.init_state = jax.jit(self._init_state)
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
    arch, batch = self.arch, self.config.batch_size
    k_z, k_mix, k_cut, k_z2, k_noise = jax.random.split(key, 5)

    def mapping(k):
      z = jax.random.normal(k, (batch, arch.z_dim))
      return self.g.apply({'params': g_params}, z, method=StyleGAN2.mapping)

    w = mapping(k_z)
    wplus = jnp.repeat(w[:, None], arch.n_latent, axis=1)
    if self.config.style_mixing_prob > 0:
      # As NVIDIA's: one decision and one cutoff layer for the whole batch.
      cutoff = jax.random.randint(k_cut, (), 1, arch.n_latent)
      cutoff = jnp.where(
          jax.random.uniform(k_mix) < self.config.style_mixing_prob, cutoff,
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
    idx = jax.random.choice(key, reals.shape[0], (self.config.batch_size,),
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
      interval, gamma = self.config.r1_interval, self.config.r1_gamma

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
    batch = self.config.batch_size
    ema_nimg = self.config.ema_kimg * 1000.0
    if self.config.ema_rampup > 0:
      ema_nimg = jnp.minimum(ema_nimg,
                             state['step'] * batch * self.config.ema_rampup)
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
    regularize = (self.config.r1_gamma > 0 and
                  step % self.config.r1_interval == 0)
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


class Checkpoints:
  """Orbax checkpoints of the training state in `<workdir>/checkpoints`."""

  def __init__(self, workdir: str, keep: int):
    self.manager = ocp.CheckpointManager(
        os.path.abspath(os.path.join(workdir, 'checkpoints')),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep))

  def save(self, state: State, meta: dict[str, Any]) -> None:
    step = int(state['step'])
    if self.manager.latest_step() != step:
      self.manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(jax.device_get(state)),
          meta=ocp.args.JsonSave(meta)))

  def restore(self, abstract: State) -> Optional[tuple[State, dict[str, Any]]]:
    """(state, meta) of the latest checkpoint, or None."""
    step = self.manager.latest_step()
    if step is None:
      return None
    meta = self.manager.restore(step, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore()))['meta']
    state = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract)))['state']
    return jax.tree_util.tree_map(jnp.asarray, state), meta

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def export(trainer: Trainer, state: State, out_dir: str,
           info: dict[str, Any]) -> None:
  """Writes the EMA generator to `out_dir`, replacing an earlier export once
  complete."""
  save_generator(trainer.generator(state), out_dir, info)


def _resume(trainer: Trainer, checkpoints: Checkpoints, config
            ) -> tuple[State, float]:
  """The latest checkpoint's (state, seconds trained), or a fresh state."""
  restored = checkpoints.restore(jax.eval_shape(trainer.init_state))
  if restored is None:
    return trainer.init_state(), 0.0
  state, meta = restored
  for field, value in fingerprint(config).items():
    if meta['config'].get(field) != value:
      raise SphinxError(
          f'{config.workdir}: holds a run with {field} = '
          f'{meta["config"].get(field)!r}, this config has {value!r} (use '
          'another workdir)')
  step = int(state['step'])
  if step > config.steps:
    raise SphinxError(f'{config.workdir}: its checkpoint is after step {step}, '
                      f'beyond config.steps = {config.steps}')
  print(f'resuming from the checkpoint after step {step} in '
        f'{config.workdir}', file=sys.stderr)
  return state, float(meta['seconds'])


def train(config) -> State:
  """Trains (or resumes) to `config.steps`; returns the final state."""
  validate(config)
  trainer = Trainer(config)
  checkpoints = Checkpoints(config.workdir, config.keep_checkpoints)
  state, seconds_before = _resume(trainer, checkpoints, config)
  images, labels = digits_score.load_digits(config.resolution)
  scorer = digits_score.DigitScorer(images, labels)
  print(f'real digits (held out): {scorer.reference}', flush=True)
  reals = jnp.asarray(images)
  run_start = time.perf_counter()

  def meta():  # seconds: wall time of every run on this workdir
    return {'config': fingerprint(config),
            'seconds': seconds_before + time.perf_counter() - run_start}

  def export_now():
    score = scorer.score(trainer.samples(state, config.score_samples))
    export(trainer, state, config.export_dir, {
        'source': {'trainer': 'sphinx_jax.train_prior', 'data': digits_score.DATA,
                   'steps': step, 'kimg': step * config.batch_size / 1000,
                   'seconds': round(meta()['seconds'], 1),
                   'config': config.to_dict(), 'score': str(score),
                   'reference_score': str(scorer.reference)},
        'w_avg': f'tracked in training: EMA of w (beta {W_AVG_BETA})'})
    print(f'exported step {step} to {config.export_dir}', flush=True)

  step = int(state['step'])
  last = {}  # the latest value of each metric (R1 is computed every r1_interval)
  try:
    tick, tick_step = time.perf_counter(), step
    while step < config.steps:
      state, metrics = trainer.train_step(state, reals, step)
      step += 1
      last.update(metrics)
      if step % config.log_every == 0 or step == config.steps:
        jax.block_until_ready(state)
        rate = (step - tick_step) / (time.perf_counter() - tick)
        values = ' '.join(f'{k} {float(v):.4f}' for k, v in sorted(last.items()))
        score = scorer.score(trainer.samples(state, config.score_samples))
        print(f'step {step}/{config.steps} kimg '
              f'{step * config.batch_size / 1000:.1f} {values} {rate:.2f} '
              f'steps/s | samples: {score}', flush=True)
      if config.checkpoint_every and step % config.checkpoint_every == 0:
        checkpoints.save(state, meta())
      if (config.export_every and step % config.export_every == 0 and
          step < config.steps):
        export_now()
      if step % config.log_every == 0:  # scoring and saving are not training
        tick, tick_step = time.perf_counter(), step
    checkpoints.save(state, meta())
    export_now()
  finally:
    checkpoints.close()
  return state


def main(config) -> int:
  train(config)
  return 0


if __name__ == '__main__':
  cli.run(main, 'configs/train_prior.py')

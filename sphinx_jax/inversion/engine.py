"""The inversion engine: a jitted step over a batch of images, vmapped.

Each image carries its own state (heads or codes, noise maps) and its own
Adam state; the generator's and LPIPS's parameters are shared. All random
draws come from keys derived from (seed, the image's identity, step), so an
image's result does not depend on which images share its batch or where it
sits in it.

The compiled functions are module-level and take a hashable `Plan` as a
static argument: every `Inverter` with the same plan and shapes reuses them.
"""

import dataclasses
import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sphinx_jax.errors import SphinxError
from sphinx_jax.inversion import methods, metrics, objective, operators
from sphinx_jax.inversion import stages as stages_lib
from sphinx_jax.models import lpips
from sphinx_jax.models.generator import Generator, w_coordinate_spread
from sphinx_jax.runtime.compile_options import jit_run_once
from sphinx_jax.runtime.sharding import Placement

Array = jax.Array
# The stream of the per-step key the operator's own noise is drawn from.
_OPERATOR_STREAM = 0x0FE2
# ... and that of the method's regulariser's own draws.
_REGULARIZER_STREAM = 0x0EE9
# Robustness of the codes (`Inverter.robustness`): ROBUST_DRAWS draws of a
# perturbation of W+ by ROBUST_EPS times each coordinate's spread in W.
ROBUST_EPS = 0.1
ROBUST_DRAWS = 4
_ROBUST_STREAM = 0x0B57


@dataclasses.dataclass(frozen=True)
class Settings:
  """One inversion setting (README, "Configuration", has every field)."""
  method: str = 'sphinx'
  steps: int = 5000
  lr: Optional[float] = None  # None: the method's default
  lr_schedule: str = 'official'  # or 'all'
  mse_weight: float = 1.0
  lpips_weight: float = 1.5
  lpips_min_resolution: int = 256
  num_vicinal: int = 16
  seed: int = 0
  dtype: str = 'float32'  # compute dtype; parameters and Adam stay float32
  remat: bool = False  # recompute synthesis blocks in the backward pass
  # The forward operator the loss sees the generated image through.
  operator: operators.Identity = operators.Identity()
  pivot: str = 'w'  # pti: 'w' (PTI's) or 'sphinx'
  pti_locality: bool = False  # pti: PTI's locality regulariser
  # ilo: l1 radii per stage (the last repeats; empty: no projection).
  ilo_radius_latent: tuple[float, ...] = ()
  ilo_radius_noise: tuple[float, ...] = ()
  ilo_radius_hidden: tuple[float, ...] = (1000.0, 1000.0, 6000.0)


@dataclasses.dataclass(frozen=True)
class Plan:
  """Everything the compiled functions depend on besides array shapes."""
  method: methods.Method
  lr: float
  schedule_all: bool
  mse_weight: float
  lpips_weight: float  # 0 when LPIPS is off
  num_vicinal: int
  dtype: str = 'float32'
  operator: operators.Identity = operators.Identity()

  def tx(self, steps) -> optax.GradientTransformation:
    """The optimiser for a run of `steps` (a traced value inside the step,
    so runs of any length share one compiled program)."""
    return self.method.optimizer(self.lr, steps, self.schedule_all)


def image_keys(seed: int, identities: np.ndarray) -> Array:
  """(B,) identities -> (B, 3) keys: init, per-step draws, final estimate."""
  base = jax.random.key(seed)
  return jax.vmap(lambda i: jax.random.split(jax.random.fold_in(base, i), 3))(
      jnp.asarray(identities, jnp.uint32))


# Per-image functions; the jitted versions below vmap them over the batch.

def compute_copy(tree, dtype: str):
  """The weights the step computes with: float leaves cast to `dtype`."""
  if dtype == 'float32':
    return tree
  return jax.tree_util.tree_map(
      lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x,
      tree)


def _rgb(x):
  """An operator's image output as LPIPS takes it (grayscale replicated)."""
  return jnp.broadcast_to(x, x.shape[:-1] + (3,))


def _loss(plan: Plan, state, key, draw, clock, target, target_feats,
          op_params, g, lpips_params):
  """The loss of one draw in the operator's output space, where `target`
  (the observation) lives; `key` seeds the operator's own noise. `g` holds
  compute-dtype weights; the method renders in that dtype and returns the
  image in float32, so the state and its gradients stay float32."""
  image, _, _ = plan.method.render(state, draw, clock, g)
  pred = plan.operator.apply(op_params, image,
                             jax.random.fold_in(key, _OPERATOR_STREAM))
  loss = plan.mse_weight * jnp.mean(jnp.square(pred - target))
  if plan.lpips_weight:
    feats = lpips.features(lpips_params, _rgb(pred).astype(plan.dtype))
    loss += plan.lpips_weight * lpips.distance_from_features(
        lpips_params, feats, target_feats).astype(jnp.float32)
  return loss + plan.method.regularizer(
      state, clock, jax.random.fold_in(key, _REGULARIZER_STREAM), g,
      lpips_params if plan.lpips_weight else None), image


def _step_one(plan: Plan, state, opt_state, keys, draw, target, target_feats,
              op_params, step, steps, g, lpips_params):
  """One image's step; `draw` is None (drawn here from the image's keys) or
  a recorded draw to replay."""
  key = jax.random.fold_in(keys[1], step)
  clock = methods.Clock(step, steps)
  if draw is None:
    draw = plan.method.draw(key, g)
  state = plan.method.begin(state, key, clock, g)
  (loss, image), grads = jax.value_and_grad(
      functools.partial(_loss, plan), has_aux=True)(
          state, key, draw, clock, target, target_feats, op_params, g,
          lpips_params)
  updates, opt_state = plan.tx(steps).update(grads, opt_state, state)
  state = plan.method.post_update(optax.apply_updates(state, updates), clock)
  return state, opt_state, loss, image


def _estimate_one(plan: Plan, state, keys, g: Generator, steps):
  """Mean and std of the image (Welford), and the mean W+ and content,
  over num_vicinal draws of the method's random inputs (after the last
  step)."""
  clock = methods.Clock(steps, steps)

  def draw(carry, k):
    n, mean, m2, wplus_sum, content_sum = carry
    draw = plan.method.draw(jax.random.fold_in(keys[2], k), g)
    image, wplus, content = plan.method.render(state, draw, clock, g)
    n = n + 1
    delta = image - mean
    mean = mean + delta / n
    m2 = m2 + delta * (image - mean)
    content_sum = content_sum if content is None else content_sum + content
    return (n, mean, m2, wplus_sum + wplus, content_sum), None

  r = g.resolution
  init = (0.0, jnp.zeros((r, r, 3)), jnp.zeros((r, r, 3)),
          jnp.zeros((g.n_latent, g.w_dim)), jnp.zeros((4, 4, g.arch.channel(4))))
  (n, mean, m2, wplus_sum, content_sum), _ = jax.lax.scan(
      draw, init, jnp.arange(plan.num_vicinal))
  return mean, jnp.sqrt(m2 / n), wplus_sum / n, content_sum / n


def _robustness_one(plan: Plan, state, wplus, content, keys, scale, g):
  """Mean PSNR between the method's image of the codes and of the codes
  with W+ perturbed by N(0, scale^2) per coordinate."""
  decode = lambda w: plan.method.decode(state, w, content, g)
  base = decode(wplus)

  def one(total, k):
    key = jax.random.fold_in(jax.random.fold_in(keys[2], _ROBUST_STREAM), k)
    delta = scale * jax.random.normal(key, wplus.shape)
    return total + metrics.psnr(decode(wplus + delta), base), None

  total, _ = jax.lax.scan(one, 0.0, jnp.arange(ROBUST_DRAWS))
  return total / ROBUST_DRAWS


@functools.partial(jit_run_once, static_argnums=0)
def _robustness(plan: Plan, state, wplus, content, keys, scale, g):
  return jax.vmap(functools.partial(_robustness_one, plan),
                  in_axes=(0, 0, 0, 0, None, None))(state, wplus, content,
                                                    keys, scale, g)


@functools.partial(jit_run_once, static_argnums=0)
def _init(plan: Plan, keys, g):
  def one(k):
    state = plan.method.init(k[0], g)
    return state, plan.tx(1).init(state)
  return jax.vmap(one)(keys)


def _batch_step(plan: Plan, state, opt_state, keys, draws, targets, feats,
                op_params, step, steps, g, lpips_params):
  return jax.vmap(functools.partial(_step_one, plan),
                  in_axes=(0, 0, 0, 0, 0, 0, 0, None, None, None, None))(
                      state, opt_state, keys, draws, targets, feats, op_params,
                      step, steps, g, lpips_params)


_step = jax.jit(_batch_step, static_argnums=0, donate_argnums=(1, 2))


@functools.partial(jax.jit, static_argnums=0, donate_argnums=(1, 2))
def _steps(plan: Plan, state, opt_state, keys, targets, feats, op_params, first,
           count, steps, g, lpips_params):
  """`count` steps from `first` in one dispatch: a loop on the device keeps
  Python out of the way (`count` is traced: one program for any count)."""

  def body(i, carry):
    return _batch_step(plan, carry[0], carry[1], keys, None, targets, feats,
                       op_params, first + i, steps, g, lpips_params)

  r = g.resolution
  init = (state, opt_state, jnp.zeros(targets.shape[:1], jnp.float32),
          jnp.zeros(targets.shape[:1] + (r, r, 3), jnp.float32))
  return jax.lax.fori_loop(0, count, body, init)


@functools.partial(jax.jit, static_argnums=0)
def _estimate(plan: Plan, state, keys, g, steps):
  return jax.vmap(functools.partial(_estimate_one, plan),
                  in_axes=(0, 0, None, None))(state, keys, g, steps)


_image_keys = jax.jit(image_keys, static_argnums=0)
_observation_keys = jax.jit(operators.observation_keys, static_argnums=(0, 2))
_features = jax.jit(lambda params, x: lpips.features(params, _rgb(x)))


@functools.partial(jax.jit, static_argnums=0)
def _observe(operator, op_params, clean, keys):
  return jax.vmap(operator.observe)(op_params, clean, keys)


@functools.partial(jax.jit, static_argnums=0)
def _from_file(operator, op_params, images):
  return jax.vmap(operator.from_file)(op_params, images)


@functools.partial(jax.jit, static_argnums=0)
def _view(operator, op_params, observations):
  return jax.vmap(operator.view)(op_params, observations)


@dataclasses.dataclass
class Result:
  """Per-image outputs of one batch: arrays whose leading axis is the batch,
  sharded like it (np.asarray takes them whole in a one-process run;
  `Placement.local` takes this process's rows in any run)."""
  state: Any
  reconstruction: Array  # the last step's draw (the official output)
  mean: Array  # mean image over num_vicinal draws
  std: Array  # its per-pixel standard deviation
  wplus_mean: Array
  content_mean: Optional[Array]  # SPHInX only
  losses: Array  # (B,) at the last step
  robustness: Array  # (B,) `Inverter.robustness` of the mean codes


class Inverter:
  """Inverts batches of images onto one generator with one setting.

  Everything per-image (targets, keys, state, Adam state) is placed by
  `placement`: split along the batch axis over its mesh's devices, the
  generator and LPIPS weights replicated. The mesh may span the devices of
  several processes (jax.distributed): each process then passes its own rows
  of a batch (`placement.padded_batch_size`) and every method must be called
  by all processes together.
  """

  def __init__(self, g: Generator, settings: Settings,
               placement: Optional[Placement] = None):
    self.settings = settings
    self.placement = placement or Placement()
    self.g = self.placement.replicate(g)
    self.method = methods.get(settings.method).for_generator(g, settings)
    stages = self.method.stages
    if stages and stages_lib.empty_stage(stages, settings.steps):
      raise SphinxError(
          f'config.steps = {settings.steps}: method {settings.method} runs '
          f'{len(stages)} stages in the proportions {stages}; every stage '
          f'needs a step (at least {stages_lib.fewest_steps(stages)} steps)')
    self.lr = settings.lr if settings.lr is not None else self.method.default_lr
    self.operator = settings.operator
    self.plan = Plan(
        method=self.method, lr=self.lr,
        schedule_all=settings.lr_schedule == 'all',
        mse_weight=settings.mse_weight,
        lpips_weight=objective.lpips_weight(
            settings.lpips_weight, g.resolution, settings.lpips_min_resolution,
            self.operator.lpips),
        num_vicinal=settings.num_vicinal, dtype=settings.dtype,
        operator=self.operator)
    self.lpips_params = self.placement.replicate(lpips.load_params())
    # What the steps compute with (cast copies for bfloat16).
    self.g_compute = dataclasses.replace(compute_copy(self.g, settings.dtype),
                                         remat=settings.remat)
    self.lpips_compute = compute_copy(self.lpips_params, settings.dtype)
    self._steps_total = jax.device_put(np.int32(settings.steps))
    self._step_memory: dict[int, int] = {}
    self._spread = None

  def init(self, identities):
    """Keys, states and Adam states for a batch of image identities."""
    keys = _image_keys(self.settings.seed, self.placement.shard(
        np.asarray(identities, np.uint32)))
    state, opt_state = _init(self.plan, keys, self.g)
    return keys, state, opt_state

  def operator_params(self, identities):
    """The forward operator's parameters for a batch (leading axis)."""
    return self.placement.shard(operators.batch_params(
        self.operator, self.settings.seed, identities, self.g.resolution))

  def observe(self, images, identities, op_params, given: bool = False,
              stream: int = operators.OBSERVATION_STREAM) -> Array:
    """The observations of a batch, on the devices: synthesised from
    (B, R, R, 3) clean images (their noise drawn from the seed, each image's
    identity and `stream`), or with `given`, made from observations loaded
    at `operator.load_size`."""
    images = self.placement.shard(images)
    if given:
      return _from_file(self.operator, op_params, images)
    keys = _observation_keys(self.settings.seed, self.placement.shard(
        np.asarray(identities, np.uint32)), stream)
    return _observe(self.operator, op_params, images, keys)

  def observe_reconstruction(self, images, identities, op_params) -> Array:
    """(B, R, R, 3) pictures of reconstructions seen through the operator as
    their observations were, with a fresh draw of its noise (the official
    code's pros_gen.png): reconstruction_observed.png, to set beside
    observation.png."""
    return self.view(op_params, self.observe(
        images, identities, op_params,
        stream=operators.RECONSTRUCTION_STREAM))

  def view(self, op_params, observations) -> Array:
    """(B, R, R, 3) pictures of the observations (observation.png)."""
    return _view(self.operator, op_params, self.placement.shard(observations))

  def target_features(self, targets: Array):
    """LPIPS features of the targets, computed once per batch."""
    if not self.plan.lpips_weight:
      return jnp.zeros(targets.shape[:1], device=targets.sharding)
    return _features(self.lpips_compute, targets.astype(self.settings.dtype))

  def step(self, state, opt_state, keys, targets, target_feats, op_params,
           step: int, draws=None):
    """One optimisation step for the whole batch; returns the new state, Adam
    state, (B,) losses and the (B, H, W, 3) images generated at this step.
    `draws`: None, or this step's random inputs for each image (the
    method's `draw` pytree with a leading batch axis) to use instead."""
    return _step(*self._step_args(state, opt_state, keys, targets,
                                  target_feats, op_params, step, draws))

  def _step_args(self, state, opt_state, keys, targets, target_feats,
                 op_params, step, draws):
    return (self.plan, state, opt_state, keys, draws, targets, target_feats,
            op_params, jax.device_put(np.int32(step)), self._steps_total,
            self.g_compute, self.lpips_compute)

  def steps(self, state, opt_state, keys, targets, target_feats, op_params,
            first: int, count: int):
    """`count` steps from step `first` in one dispatch; returns what `step`
    returns, with the losses and images of the last of them."""
    return _steps(*self._steps_args(state, opt_state, keys, targets,
                                    target_feats, op_params, first, count))

  def lower_steps(self, state, opt_state, keys, targets, target_feats,
                  op_params, first: int = 0, count: int = 1):
    """The program `steps` (and so `invert`) runs, lowered for these
    arguments, to compile apart (the bench times its compilation, the
    automatic batch size reads its memory); `steps` then reuses what it
    compiled, for any `first` and `count`."""
    return _steps.lower(*self._steps_args(state, opt_state, keys, targets,
                                          target_feats, op_params, first,
                                          count))

  def _steps_args(self, state, opt_state, keys, targets, target_feats,
                  op_params, first, count):
    first, count = jax.device_put((np.int32(first), np.int32(count)))
    return (self.plan, state, opt_state, keys, targets, target_feats,
            op_params, first, count, self._steps_total, self.g_compute,
            self.lpips_compute)

  def step_memory(self, batch: int) -> int:
    """Bytes per device the compiled steps need for `batch` images of this
    process (XLA's memory analysis of the program `invert` runs: arguments,
    outputs and temporaries, less the donated buffers reused for outputs).
    Compiles the program once per batch size; allocates only the batch's
    small state."""
    if batch not in self._step_memory:
      self._step_memory[batch] = self._analyse_step_memory(batch)
    return self._step_memory[batch]

  def _analyse_step_memory(self, batch: int) -> int:
    ids = np.arange(batch, dtype=np.uint32)
    keys, state, opt_state = self.init(ids)
    r = self.g.resolution
    targets = self.placement.shard(np.zeros((batch, r, r, 3), np.float32))
    memory = self.lower_steps(
        state, opt_state, keys, targets, self.target_features(targets),
        self.operator_params(ids)).compile().memory_analysis()
    return int(memory.argument_size_in_bytes + memory.output_size_in_bytes +
               memory.temp_size_in_bytes - memory.alias_size_in_bytes)

  def robustness(self, state, keys, wplus, content,
                 eps: float = ROBUST_EPS) -> Array:
    """(B,) how little the image changes when the codes do, in dB: the mean
    PSNR between the method's image of the codes (W+, content) and of W+
    plus N(0, (eps * sigma_w)^2) per coordinate, sigma_w each coordinate's
    spread in W, over ROBUST_DRAWS seeded draws."""
    if self._spread is None:
      self._spread = self.placement.replicate(w_coordinate_spread(self.g))
    return _robustness(self.plan, state, wplus, content, keys,
                       np.float32(eps) * self._spread, self.g_compute)

  def estimate(self, state, keys):
    """(mean image, std image, mean W+, mean content) over vicinal draws."""
    return _estimate(self.plan, state, keys, self.g_compute,
                     self._steps_total)

  def invert(self, targets, identities,
             on_step: Optional[Callable[..., None]] = None,
             start: Optional[tuple[Any, Any, int]] = None,
             every: int = 1, op_params=None, draws=None) -> Result:
    """Runs all steps on a batch of targets: (B, H, W, 3) images in [-1, 1],
    or with a forward operator, its observations.

    Args:
      targets: the images or observations, host arrays or already placed
        (B a multiple of the number of devices; with a mesh over several
        processes, this process's rows).
      identities: (B,) integers naming the images (seed their random draws).
      on_step: called as on_step(step, losses, images, state, opt_state)
        after every `every` steps and after the last (a checkpoint may copy
        the state; it must not keep it: the next step reuses its buffers).
      start: (state, opt_state, first step) to continue a checkpointed run
        (state and Adam state as placed by `init`).
      every: steps per dispatch; the steps in between run on the device.
      op_params: the operator's parameters (default: `operator_params`).
      draws: None, or every step's random inputs to replay instead of drawing
        them (the method's `draw` pytree with leading axes (B, steps)), for
        instance draws recorded by another implementation; the steps then
        run one per dispatch.
    """
    targets = self.placement.shard(targets)
    keys, state, opt_state = self.init(identities)
    if op_params is None:
      op_params = self.operator_params(identities)
    first = 0
    if start is not None:
      state, opt_state, first = start
    feats = self.target_features(targets)
    losses = image = None
    step, steps = first, self.settings.steps
    while step < steps:
      count = min(every - step % every, steps - step)  # end on multiples
      if draws is None:
        state, opt_state, losses, image = self.steps(
            state, opt_state, keys, targets, feats, op_params, step, count)
      else:
        for i in range(step, step + count):
          state, opt_state, losses, image = self.step(
              state, opt_state, keys, targets, feats, op_params, i,
              self.placement.shard(jax.tree_util.tree_map(
                  lambda d, i=i: d[:, i], draws)))
      step += count
      if on_step is not None:
        on_step(step - 1, losses, image, state, opt_state)
    mean, std, wplus_mean, content_mean = self.estimate(state, keys)
    return Result(
        state=state, reconstruction=image, mean=mean, std=std,
        wplus_mean=wplus_mean,
        content_mean=content_mean if self.method.has_content else None,
        losses=losses, robustness=self.robustness(
            state, keys, wplus_mean,
            content_mean if self.method.has_content else None))

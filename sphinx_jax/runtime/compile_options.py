"""XLA compiler options for the programs that run once per batch or process.

XLA's CPU backend optimises every program's loops through LLVM at its
default level (3). Random draws are threefry loops, and at level 3 LLVM
spends seconds on them for no gain in a program that runs once: the SPHInX
heads' initial state for 4 images at 256 px compiles in 7.5 s at level 3 and
2.9 s at level 1, to bitwise the same values (docs/performance.md, "Set-up
programs"; tests/test_compile_options.py). The steps, which run thousands
of times, keep the default, and so does the final estimate, whose values
level 1 changes in the last bits. jax refuses options on a jit nested in
another, so only programs called from outside any jit take them.
"""

from typing import Any, Callable

import jax

RUN_ONCE = {'xla_backend_optimization_level': 1}


def jit_run_once(fun: Callable[..., Any], **jit_kwargs) -> Callable[..., Any]:
  """`jax.jit(fun, **jit_kwargs)` compiled with RUN_ONCE."""
  return jax.jit(fun, compiler_options=RUN_ONCE, **jit_kwargs)

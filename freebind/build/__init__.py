"""Building a fused space, stage by stage: pools, the space built so far, pseudo tuples,
projector and router training, the bundle. :mod:`freebind.build.orchestrator` only calls the
stages.

``freebind.build(expression, …)`` calls :func:`freebind.build.orchestrator.build`: the
package itself is callable, since it and the function share the name."""

from freebind.util.callable_module import make_callable as _make_callable

_make_callable(__name__, "freebind.build.orchestrator", "build")

"""Modules that are also the API function of their name.

`autointerp.explain(examples)`, `autointerp.score(...)`, `autointerp.report(runs)`,
`autointerp.export(run)` and `autointerp.cache(config)` are the library's calls (`autointerp.api`),
and `autointerp.explain`, `.score`, `.report`, `.export` and `.cache` are also its stage modules.
Python binds a submodule to the package's attribute of its name when it is imported, which would
replace a function of that name, so the name means the module at some times and the function at
others. Instead each of these modules is callable: calling it calls `autointerp.api.<name>`, and
`autointerp.explain.Explainer` stays the module's class. `autointerp.api` holds the same functions
under their own names."""

from __future__ import annotations

import sys
import types


class CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from autointerp import api

        return getattr(api, self.__name__.rsplit(".", 1)[1])(*args, **kwargs)


def make_callable(name: str) -> None:
    """Make the module `name` (call with `__name__`) call its namesake in `autointerp.api`."""
    sys.modules[name].__class__ = CallableModule

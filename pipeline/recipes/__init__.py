"""Dataset recipes: one ``prepare_<dataset>`` function per corpus.

Each returns a :class:`~pipeline.manifest.Manifest`.

``RECIPES`` maps the CLI's ``--dataset`` names to those functions. Recipes are imported on first use, so a recipe
module that is missing or broken only fails when it is asked for.
"""

from __future__ import annotations

import importlib
from typing import Callable, Iterator, Mapping

from pipeline.manifest import Manifest

Recipe = Callable[..., Manifest]

RECIPE_PATHS = {
    "ouluvs2": "pipeline.recipes.ouluvs2:prepare_ouluvs2",
    "mplstm": "pipeline.recipes.mplstm_layout:prepare_mplstm_layout",
    "lightfield": "pipeline.recipes.lightfield:prepare_lightfield",
    "lightfield-grid": "pipeline.recipes.lightfield:prepare_lightfield_grid",
    "lrw": "pipeline.recipes.lrw:prepare_lrw",
    "generic": "pipeline.recipes.generic:prepare_generic",
    "synthetic": "pipeline.recipes.synthetic:prepare_synthetic",
    "moving-digits": "pipeline.recipes.moving_digits:prepare_moving_digits",
}


class RecipeRegistry(Mapping[str, Recipe]):
    """Name -> recipe function, importing each recipe's module only when it is looked up."""

    def __init__(self, paths: Mapping[str, str]):
        self._paths = dict(paths)

    def __getitem__(self, name: str) -> Recipe:
        module_name, _, attribute = self._paths[name].partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ImportError(f"dataset recipe {name!r} is unavailable: cannot import {module_name} ({exc})") from exc
        return getattr(module, attribute)

    def __contains__(self, name: object) -> bool:
        return name in self._paths

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)


RECIPES: Mapping[str, Recipe] = RecipeRegistry(RECIPE_PATHS)

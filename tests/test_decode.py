"""automl.sampling.decode.Decoder builds the recipe PyGlove's own decode (pg.materialize) builds."""
import importlib
import pkgutil

import pyglove as pg
import pytest

import automl
import search_spaces
from automl import adapters
from automl.sampling.decode import Decoder


def _same(a, b) -> bool:
    return type(a) is type(b) and pg.eq(a, b) and a.to_json_str() == b.to_json_str()


@pytest.mark.parametrize("name", ["digits_grid", "digits_large"])
def test_every_recipe_of_the_tabular_spaces_decodes_as_pyglove_does(name):
    space = importlib.import_module(f"search_spaces.{name}").SPACE
    decoder = Decoder(space)
    assert decoder.fast
    for dna in decoder.spec.iter_dna():
        assert _same(decoder.decode(dna), pg.materialize(space, dna)), dna


@pytest.mark.parametrize("name", [m.name for m in pkgutil.iter_modules(search_spaces.__path__)
                                  if not m.name.startswith("_")])
def test_random_recipes_of_every_example_space_decode_as_pyglove_does(name):
    space = importlib.import_module(f"search_spaces.{name}").SPACE
    decoder = Decoder(space)
    generator = pg.geno.Random(seed=7)
    generator.setup(decoder.spec)
    for _ in range(25):
        dna = generator.propose()
        assert _same(decoder.decode(dna), pg.materialize(space, dna)), dna


def test_floats_and_nested_choices_take_the_dna_values():
    space = automl.Recipe(adapter=pg.oneof([adapters.LoRA(rank=pg.oneof([2, 4])), adapters.FullFineTune()]),
                          lr=pg.floatv(1e-4, 1e-2, scale="log"))
    decoder = Decoder(space)
    recipe = decoder.decode(pg.DNA([(0, 1), 3e-3]))
    assert isinstance(recipe.adapter, adapters.LoRA) and recipe.adapter.rank == 4 and recipe.lr == 3e-3
    assert _same(recipe, pg.materialize(space, pg.DNA([(0, 1), 3e-3])))


def test_a_decision_it_does_not_model_falls_back_to_pyglove():
    odd = pg.List([pg.manyof(2, [1, 2, 3])])     # a manyof: PyGlove's decode does it
    decoder = Decoder(odd)
    assert not decoder.fast
    dna = pg.DNA([0, 2])
    assert decoder.decode(dna) == pg.materialize(odd, dna)

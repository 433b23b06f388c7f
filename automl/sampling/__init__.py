"""Search algorithms as Optuna samplers over PyGlove spaces."""
from automl.sampling.pyglove_sampler import PyGloveSampler
from automl.sampling.samplers import ALGORITHMS, make_sampler
from automl.sampling.space import dna_params, dna_spec, suggest

__all__ = ["ALGORITHMS", "PyGloveSampler", "dna_params", "dna_spec", "make_sampler", "suggest"]

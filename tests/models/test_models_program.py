"""A user's own Pyro program from a file: PATH.py:build, its settings and its refusals."""

import textwrap

import pytest

from ppl_vae.models.program import (ProgramError, build_program, builder_defaults, load_builder, parse_program,
                                    settings_grid)

PROGRAM = textwrap.dedent('''
    import torch
    import pyro
    import pyro.distributions as dist
    from torch import nn

    class TinyVAE(nn.Module):
        def __init__(self, x_dim, latent_dim, beta):
            super().__init__()
            self.latent_dim, self.beta = latent_dim, beta
            self.encoder = nn.Linear(x_dim, 2 * latent_dim)
            self.decoder = nn.Linear(latent_dim, x_dim)

        def model(self, x):
            pyro.module("tiny", self)
            with pyro.plate("data", x.shape[0]):
                with pyro.poutine.scale(scale=self.beta):
                    z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], self.latent_dim), 1.0).to_event(1))
                pyro.sample("x", dist.Normal(self.decoder(z), 0.5).to_event(1), obs=x)

        def guide(self, x):
            pyro.module("tiny", self)
            loc, log_scale = self.encoder(x).chunk(2, -1)
            with pyro.plate("data", x.shape[0]):
                with pyro.poutine.scale(scale=self.beta):
                    pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    def build(latent_dim=2, beta=1.0, x_dim=4):
        return TinyVAE(x_dim, latent_dim, beta)

    def pair(latent_dim):
        vae = TinyVAE(4, latent_dim, 1.0)
        return vae.model, vae.guide
''')


@pytest.fixture
def program(tmp_path):
    path = tmp_path / "my_vae.py"
    path.write_text(PROGRAM)
    return path


def test_a_program_file_builds_its_model_and_guide_with_the_given_settings(program):
    ref = parse_program(str(program))
    assert ref.builder == "build" and len(ref.sha256) == 64 and ref.label == "my_vae.py:build"
    builder = load_builder(ref)
    assert builder_defaults(builder) == {"latent_dim": 2, "beta": 1.0, "x_dim": 4}
    source, model, guide = build_program(builder, {"latent_dim": 3})
    assert source.latent_dim == 3 and model.__self__ is source and guide.__self__ is source
    pair = load_builder(parse_program(f"{program}:pair"))
    source, model, guide = build_program(pair, {"latent_dim": 5}, "my_vae.py:pair")
    assert source is None and callable(model) and callable(guide)


@pytest.mark.parametrize("spec,message", [
    ("{path}:nope", "no function 'nope'; it defines build, pair"),
    ("{path}:1bad", "'1bad' is not a function name"),
    ("{folder}/absent.py", "no file at"),
    ("{folder}/data.csv", "expected a Python file"),
])
def test_bad_program_specs_are_refused_by_name(program, tmp_path, spec, message):
    (tmp_path / "data.csv").write_text("a\n1\n")
    with pytest.raises(ProgramError, match=message):
        load_builder(parse_program(spec.format(path=program, folder=tmp_path)))


def test_settings_are_typed_and_checked_against_the_builder(program):
    grid = settings_grid(["beta=0.5,1,2e-1", "latent_dim=8", "name=abc", "flag=true"])
    assert grid == {"beta": (0.5, 1, 0.2), "latent_dim": (8,), "name": ("abc",), "flag": (True,)}
    assert isinstance(grid["latent_dim"][0], int)
    with pytest.raises(ProgramError, match="given twice"):
        settings_grid(["beta=1", "beta=2"])
    with pytest.raises(ProgramError, match="expected NAME=VALUE"):
        settings_grid(["beta"])
    builder = load_builder(parse_program(str(program)))
    with pytest.raises(ProgramError, match=r"takes no argument 'width'; its arguments are beta, latent_dim, x_dim"):
        build_program(builder, {"width": 3}, "my_vae.py:build")
    pair = load_builder(parse_program(f"{program}:pair"))
    with pytest.raises(ProgramError, match=r"needs 'latent_dim': give them with --set"):
        build_program(pair, {}, "my_vae.py:pair")

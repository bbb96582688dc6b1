"""Frozen, validated hyper-parameter sets for the three model families.

A config is everything needed to rebuild a model: :func:`ppl_vae.models.build_model`
turns it into a network, :meth:`to_dict` / :func:`config_from_dict` carry it
through ``config.json``. Validation happens on construction, so a bad value is
reported where it was written, naming the field and its allowed range.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch

from ppl_vae._validate import check_choice, check_int_range, check_positive

ARCHITECTURES = ("linear", "mlp", "cnn")
PRIORS = ("standard", "learned")
LATENT_MAPPINGS = ("joint", "separate")
#: What the MHVAE's q(z2 | .) reads: z1 alone (the Markovian encoder of SPEC 2.3), or z1 and x (a skip path).
Z2_INPUTS = ("z1", "z1+x")
SPLITS = ("quadrant", "half")


def _set(config: Any, name: str, value: Any) -> None:
    object.__setattr__(config, name, value)


def _check_hidden_dims(hidden_dims: Any) -> tuple[int, ...]:
    if isinstance(hidden_dims, int):
        hidden_dims = (hidden_dims,)
    dims = tuple(hidden_dims)
    if not dims:
        raise ValueError("hidden_dims must hold at least one width (>= 1), got ()")
    return tuple(check_int_range("hidden_dims", width, 1) for width in dims)


def _check_image_shape(image_shape: Any, arch: str) -> tuple[int, int] | None:
    if image_shape is None:
        if arch == "cnn":
            raise ValueError("image_shape must be given as (height, width) when arch='cnn'")
        return None
    shape = tuple(image_shape)
    if len(shape) != 2:
        raise ValueError(f"image_shape must be (height, width), got {image_shape!r}")
    return tuple(check_int_range("image_shape", side, 1) for side in shape)  # type: ignore[return-value]


def _check_std(name: str, std: Any, latent_dim: int) -> float | tuple[float, ...] | None:
    """A fixed encoder std: None (learnable), one positive number, or one per latent dimension."""
    if std is None:
        return None
    if isinstance(std, (int, float)):
        return check_positive(name, std)
    values = tuple(check_positive(name, s) for s in std)
    if len(values) != latent_dim:
        raise ValueError(f"{name} must be one number or {latent_dim} numbers (one per latent dimension), "
                         f"got {len(values)}")
    return values


#: Per-latent-level training controls of the KL term (suffixed ``1``/``2`` for the MHVAE levels):
#: a linear warm-up over ``kl_warmup`` steps, or cyclical annealing with period ``kl_cycle`` steps
#: ramping over the fraction ``kl_cycle_ratio`` of each period (0: off), and a free-bits floor of
#: ``free_bits`` nats per latent dimension (0: off). See ``ppl_vae.inference.schedules``.
KL_CONTROLS = ("kl_warmup", "kl_cycle", "kl_cycle_ratio", "free_bits")


def _check_kl_controls(config: Any, level: str) -> None:
    warmup, cycle = f"kl_warmup{level}", f"kl_cycle{level}"
    ratio, floor = f"kl_cycle_ratio{level}", f"free_bits{level}"
    _set(config, warmup, check_int_range(warmup, getattr(config, warmup), 0))
    _set(config, cycle, check_int_range(cycle, getattr(config, cycle), 0))
    value = float(getattr(config, ratio))
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{ratio} must be in (0, 1], got {value}")
    _set(config, ratio, value)
    value = float(getattr(config, floor))
    if not value >= 0.0:  # also refuses NaN
        raise ValueError(f"{floor} must be >= 0 nats per latent dimension, got {value}")
    _set(config, floor, value)
    if getattr(config, warmup) > 0 and getattr(config, cycle) > 0:
        raise ValueError(f"give {warmup} (a warm-up) or {cycle} (cyclical annealing), not both")


class _ConfigMixin:
    family: ClassVar[str]
    _hyperparameter_names: ClassVar[tuple[str, ...]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dictionary (tuples become lists) including ``family``."""
        out: dict[str, Any] = {"family": self.family}
        for key, value in asdict(self).items():  # type: ignore[call-overload]
            out[key] = list(value) if isinstance(value, tuple) else value
        return out

    def hyperparameters(self) -> dict[str, float]:
        """The scalar hyper-parameters (KL weights, stds), e.g. for use as xarray coordinates."""
        return {name: getattr(self, name) for name in self._hyperparameter_names}


@dataclass(frozen=True)
class VAEConfig(_ConfigMixin):
    """One-latent VAE (SPEC 2.1): p(z) = N(0, eta_enc^2), p(x|z) = N(dec(z), eta_dec^2), q(z|x) = N(enc(x), Sigma).

    ``encoder_std`` None means Sigma is learnable (input-dependent for mlp/cnn,
    a free vector for linear); a number or one number per latent dimension fixes it.
    """

    family: ClassVar[str] = "vae"
    _hyperparameter_names: ClassVar[tuple[str, ...]] = ("beta", "eta_enc", "eta_dec", *KL_CONTROLS)

    input_dim: int
    latent_dim: int
    arch: str = "linear"
    hidden_dims: tuple[int, ...] = (128,)
    beta: float = 1.0
    eta_enc: float = 1.0
    eta_dec: float = 1.0
    encoder_std: float | tuple[float, ...] | None = None
    image_shape: tuple[int, int] | None = None
    kl_warmup: int = 0
    kl_cycle: int = 0
    kl_cycle_ratio: float = 0.5
    free_bits: float = 0.0

    @property
    def data_dims(self) -> dict[str, int]:
        """Name -> width of each positional data argument of the model, in order."""
        return {"x": self.input_dim}

    def __post_init__(self) -> None:
        _set(self, "input_dim", check_int_range("input_dim", self.input_dim, 1))
        _set(self, "latent_dim", check_int_range("latent_dim", self.latent_dim, 1))
        _set(self, "arch", check_choice("arch", self.arch, ARCHITECTURES))
        _set(self, "hidden_dims", _check_hidden_dims(self.hidden_dims))
        for name in ("beta", "eta_enc", "eta_dec"):
            _set(self, name, check_positive(name, getattr(self, name)))
        _set(self, "encoder_std", _check_std("encoder_std", self.encoder_std, self.latent_dim))
        _check_kl_controls(self, "")
        _set(self, "image_shape", _check_image_shape(self.image_shape, self.arch))
        _check_image_size(self.image_shape, self.arch, self.input_dim, "input_dim")


@dataclass(frozen=True)
class CVAEConfig(_ConfigMixin):
    """Conditional VAE (SPEC 2.2): condition x (``x_dim``), output y (``y_dim``).

    ``prior='learned'`` replaces N(0, eta_enc^2) by a learned p(z|x).
    ``latent_mapping='separate'`` gives the encoder one network per input, x and y,
    each ending in the latent space, summed there (the authors' own CVAE encoder f(x) + g(y),
    the baseline of SPEC 6.3 and 6.8, not a mitigation);
    ``'joint'`` feeds the concatenation [x, y] through one shared network. The two
    coincide for ``arch='linear'`` (W1 x + W2 y). For ``arch='cnn'``, ``image_shape``
    and ``split`` say where x and y sit in the full image.
    """

    family: ClassVar[str] = "cvae"
    _hyperparameter_names: ClassVar[tuple[str, ...]] = ("beta", "eta_enc", "eta_dec", *KL_CONTROLS)

    x_dim: int
    y_dim: int
    latent_dim: int
    arch: str = "linear"
    hidden_dims: tuple[int, ...] = (128,)
    beta: float = 1.0
    eta_enc: float = 1.0
    eta_dec: float = 1.0
    prior: str = "standard"
    latent_mapping: str = "joint"
    image_shape: tuple[int, int] | None = None
    split: str | None = None
    kl_warmup: int = 0
    kl_cycle: int = 0
    kl_cycle_ratio: float = 0.5
    free_bits: float = 0.0

    @property
    def data_dims(self) -> dict[str, int]:
        """Name -> width of each positional data argument of the model, in order."""
        return {"x": self.x_dim, "y": self.y_dim}

    def __post_init__(self) -> None:
        _set(self, "x_dim", check_int_range("x_dim", self.x_dim, 1))
        _set(self, "y_dim", check_int_range("y_dim", self.y_dim, 1))
        _set(self, "latent_dim", check_int_range("latent_dim", self.latent_dim, 1))
        _set(self, "arch", check_choice("arch", self.arch, ARCHITECTURES))
        _set(self, "hidden_dims", _check_hidden_dims(self.hidden_dims))
        for name in ("beta", "eta_enc", "eta_dec"):
            _set(self, name, check_positive(name, getattr(self, name)))
        _set(self, "prior", check_choice("prior", self.prior, PRIORS))
        _set(self, "latent_mapping", check_choice("latent_mapping", self.latent_mapping, LATENT_MAPPINGS))
        _check_kl_controls(self, "")
        _set(self, "image_shape", _check_image_shape(self.image_shape, self.arch))
        if self.split is not None:
            check_choice("split", self.split, SPLITS)
        if self.arch == "cnn":
            if self.split is None:
                raise ValueError(f"split must be one of {SPLITS!r} when arch='cnn'")
            height, width = self.image_shape  # type: ignore[misc]
            if self.x_dim + self.y_dim != height * width:
                raise ValueError(f"x_dim + y_dim must equal the pixel count {height * width} of image_shape "
                                 f"{self.image_shape} when arch='cnn', got {self.x_dim} + {self.y_dim}")


@dataclass(frozen=True)
class MHVAEConfig(_ConfigMixin):
    """Two-level Markovian hierarchical VAE (SPEC 2.3), latents z1 (``latent_dims[0]``) and z2.

    ``sigma1`` / ``sigma2``: fixed isotropic encoder std of q(z1|x) / q(z2|z1), or
    None for a learnable diagonal std (input-dependent for mlp/cnn).
    ``z2_input``: ``'z1'`` gives the Markovian encoder q(z2|z1) of the theory;
    ``'z1+x'`` adds a skip path x -> z2, q(z2|z1, x), the paper's "separate latent
    mappings" for hierarchical VAEs (SPEC 6.8: x mapped to each latent level). Its
    encoder reads the concatenation [z1, x] (linear: W2 z1 + W3 x). linear and mlp
    only; no closed form covers it.
    """

    family: ClassVar[str] = "mhvae"
    _hyperparameter_names: ClassVar[tuple[str, ...]] = (
        "beta1", "beta2", "eta_enc", "eta_dec", *(f"{name}{level}" for level in "12" for name in KL_CONTROLS))

    input_dim: int
    latent_dims: tuple[int, int] = (8, 8)
    arch: str = "linear"
    hidden_dims: tuple[int, ...] = (128,)
    beta1: float = 1.0
    beta2: float = 1.0
    eta_enc: float = 1.0
    eta_dec: float = 1.0
    sigma1: float | None = 1.0
    sigma2: float | None = None
    image_shape: tuple[int, int] | None = None
    z2_input: str = "z1"
    kl_warmup1: int = 0
    kl_cycle1: int = 0
    kl_cycle_ratio1: float = 0.5
    free_bits1: float = 0.0
    kl_warmup2: int = 0
    kl_cycle2: int = 0
    kl_cycle_ratio2: float = 0.5
    free_bits2: float = 0.0

    @property
    def data_dims(self) -> dict[str, int]:
        """Name -> width of each positional data argument of the model, in order."""
        return {"x": self.input_dim}

    def __post_init__(self) -> None:
        _set(self, "input_dim", check_int_range("input_dim", self.input_dim, 1))
        dims = tuple(self.latent_dims) if not isinstance(self.latent_dims, int) else ()
        if len(dims) != 2:
            raise ValueError(f"latent_dims must be two integers (d1, d2) >= 1, got {self.latent_dims!r}")
        _set(self, "latent_dims", tuple(check_int_range("latent_dims", d, 1) for d in dims))
        _set(self, "arch", check_choice("arch", self.arch, ARCHITECTURES))
        _set(self, "hidden_dims", _check_hidden_dims(self.hidden_dims))
        for name in ("beta1", "beta2", "eta_enc", "eta_dec"):
            _set(self, name, check_positive(name, getattr(self, name)))
        for name in ("sigma1", "sigma2"):
            value = getattr(self, name)
            _set(self, name, None if value is None else check_positive(name, value))
        _check_kl_controls(self, "1")
        _check_kl_controls(self, "2")
        _set(self, "image_shape", _check_image_shape(self.image_shape, self.arch))
        _check_image_size(self.image_shape, self.arch, self.input_dim, "input_dim")
        _set(self, "z2_input", check_choice("z2_input", self.z2_input, Z2_INPUTS))
        if self.z2_input != "z1" and self.arch == "cnn":
            raise ValueError(f"z2_input={self.z2_input!r} (a skip path x -> z2) is implemented for arch 'linear' "
                             "and 'mlp' only, got arch='cnn'; use z2_input='z1'")


def _check_image_size(image_shape: tuple[int, int] | None, arch: str, dim: int, name: str) -> None:
    if arch == "cnn" and image_shape is not None and image_shape[0] * image_shape[1] != dim:
        raise ValueError(f"{name} must equal the pixel count {image_shape[0] * image_shape[1]} of image_shape "
                         f"{image_shape} when arch='cnn', got {dim}")


CONFIG_CLASSES = {cls.family: cls for cls in (VAEConfig, CVAEConfig, MHVAEConfig)}

ModelConfig = VAEConfig | CVAEConfig | MHVAEConfig


def config_from_dict(d: dict[str, Any]) -> ModelConfig:
    """Rebuild a config from :meth:`to_dict` output (the ``family`` key picks the class)."""
    fields = dict(d)
    family = fields.pop("family", None)
    if family not in CONFIG_CLASSES:
        raise ValueError(f"family must be one of {', '.join(map(repr, CONFIG_CLASSES))}, got {family!r}")
    for key, value in fields.items():
        if isinstance(value, list):
            fields[key] = tuple(value)
    return CONFIG_CLASSES[family](**fields)


def check_data(config, bundle) -> None:
    """Raise ``ValueError`` unless ``bundle`` fits models built from ``config``.

    Checks, naming the offending tensor: the bundle holds exactly the tensors the
    family takes (``x``, or ``x`` and ``y``); each is a floating-point
    ``torch.Tensor`` (float32 for training; see :func:`as_training_data`) of shape
    ``(n, width)`` with the config's width and at least one row; ``x`` and ``y``
    have the same number of rows; no NaN or inf; and a linear model's latent
    dimension does not exceed what its data can carry (the theory's maps have
    rank at most the data width).
    """
    expected = config.data_dims
    given = dict(zip(("x", "y"), bundle.tensors()))
    if set(given) != set(expected):
        raise ValueError(f"data must hold {' and '.join(expected)} for a {config.family} model, got "
                         f"{' and '.join(given)} ({'paired' if bundle.is_paired else 'unpaired'} data set "
                         f"{bundle.name!r})")
    for name, width in expected.items():
        tensor = given[name]
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"data {name} must be a torch.Tensor, got {type(tensor).__module__}."
                             f"{type(tensor).__name__}; convert it with torch.as_tensor({name}, dtype=torch.float32)")
        if not tensor.is_floating_point():
            raise ValueError(f"data {name} must hold floating-point values, got dtype {tensor.dtype}; "
                             f"convert it with {name}.float()")
        if tensor.dim() != 2 or tensor.shape[1] != width:
            raise ValueError(f"data {name} must have shape (n, {width}) for this model, got {tuple(tensor.shape)}")
        if tensor.shape[0] == 0:
            raise ValueError(f"data {name} has no rows; at least 1 is needed")
        if not torch.isfinite(tensor).all():
            bad = int((~torch.isfinite(tensor)).sum())
            raise ValueError(f"data {name} contains {bad} NaN or infinite values; all entries must be finite")
    rows = {name: int(tensor.shape[0]) for name, tensor in given.items()}
    if len(set(rows.values())) > 1:
        raise ValueError(f"data x and y must have the same number of rows (one pair per row), got "
                         f"{rows['x']} and {rows['y']}")
    _check_linear_latent(config)


def _check_linear_latent(config) -> None:
    """A linear model's latent dimension is at most the width its encoder maps from (refused before training)."""
    if config.arch != "linear":
        return
    if config.family == "vae" and config.latent_dim > config.input_dim:
        raise ValueError(f"latent_dim must be <= input_dim = {config.input_dim} for a linear VAE, "
                         f"got {config.latent_dim}")
    if config.family == "cvae" and config.latent_dim > config.y_dim:
        raise ValueError(f"latent_dim must be <= y_dim = {config.y_dim} for a linear CVAE, got {config.latent_dim}")
    if config.family == "mhvae":
        d1, d2 = config.latent_dims
        if d1 > config.input_dim or d2 > d1:
            raise ValueError(f"latent_dims must satisfy d2 <= d1 <= input_dim = {config.input_dim} for a linear "
                             f"MHVAE, got {config.latent_dims}")


def as_training_data(bundle):
    """``bundle`` with float64 tensors cast to float32 (the models' precision), warning that it did so."""
    import dataclasses
    import warnings

    cast = {name: getattr(bundle, name).float() for name in ("x", "y")
            if isinstance(getattr(bundle, name), torch.Tensor) and getattr(bundle, name).dtype == torch.float64}
    if not cast:
        return bundle
    warnings.warn(f"data {' and '.join(cast)} cast from float64 to float32 for training", stacklevel=3)
    return dataclasses.replace(bundle, **cast)

"""Type stubs of the Rust extension ``w2sg._w2sg`` (use the wrappers in ``w2sg`` instead)."""

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

__version__: str

class ConfigError(ValueError):
    """A bad config or argument; the message names the file (or ``<dict>``) and the key."""

_Link = Union[str, Mapping[str, Any]]
# {"columns": [names], "data": [numpy array (numbers) or list (text, optional booleans), ...],
#  "swept": [swept keys]}
_Table = Dict[str, Any]

def simulate(kind: str, config: Any, threads: int = 0, progress: bool = False) -> Dict[str, _Table]:
    """Runs a config (kind "dict", "text" or "path"); returns {"summary": ..., "trajectory": ...}."""

def theory(kind: str, config: Any) -> Dict[str, _Table]:
    """The d → ∞ theory of a config, in the tables of :func:`simulate`."""

def check_config(kind: str, config: Any) -> Tuple[int, int]:
    """Parses a config; returns (grid points, seeds)."""

def bbp(beta: float, gamma: float, eta: float = 1.0) -> Tuple[float, float]:
    """(BBP overlap, BBP top eigenvalue)."""

def ode(
    link: _Link,
    rho: float,
    m0: float,
    lr: float,
    taus: Sequence[float],
    r0: Optional[float] = None,
    weak_link: Optional[_Link] = None,
    noise: float = 0.0,
) -> npt.NDArray[np.float64]:
    """(len(taus), 3) array of the overlaps (m, r, s) along the ODE."""

def hermite_coefficients(link: _Link, k: int = 8) -> npt.NDArray[np.float64]:
    """Normalized Hermite coefficients a_0 … a_k."""

def features(
    model: str,
    texts: List[str],
    layer: int = -1,
    pooling: str = "last",
    max_tokens: Optional[int] = None,
    batch_size: int = 16,
    max_batch_tokens: int = 4096,
    dtype: str = "f32",
    device: str = "cpu",
    cache_dir: Optional[str] = None,
    progress: bool = False,
) -> npt.NDArray[np.float32]:
    """(len(texts), hidden) float32 pooled hidden states."""

"""evalkit: the shared core of the MLPerf Inference accuracy-evaluation kit."""
from .util import KIT_VERSION as __version__  # noqa: F401

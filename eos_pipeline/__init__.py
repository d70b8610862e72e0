"""eos-pipeline: exactly-once pipelines from Apache Kafka into PostgreSQL."""

from .config import Settings, load_settings
from .errors import EosError

__all__ = ["EosError", "Settings", "load_settings"]
__version__ = "0.1.0"

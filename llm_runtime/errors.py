"""The exceptions that mean bad input from a user: reported as one line, never a traceback."""
from llm_runtime.kv_cache import CacheFullError
from llm_runtime.model_builder.source import SourceError

from .model_folder import ModelFolderError
from .providers import ProviderError

USER_ERRORS = (SourceError, ModelFolderError, ProviderError, CacheFullError, ValueError, FileNotFoundError)

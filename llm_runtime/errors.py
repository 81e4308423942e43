"""`ParameterError`: a request parameter that cannot run, raised by every layer that checks one (sampling,
the OpenAI mapping, chat templates, tools, constraints) and reported by each door as one line or an HTTP 400."""


class ParameterError(ValueError):
    """A request parameter that cannot run; `param` names the field and `code` (OpenAI's error codes, such as
    `unsupported_parameter` or `context_length_exceeded`) says why, so an HTTP server can report both."""

    def __init__(self, param: str, message: str, code: str | None = None):
        # "must be >= 0" becomes "temperature must be >= 0"; a capitalized message is a whole sentence already
        whole = message.startswith(param) or message[:1].isupper()
        super().__init__(message if whole else f"{param} {message}")
        self.param, self.code = param, code


class AdapterError(ValueError):
    """A LoRA adapter file that cannot be read, or an adapter that does not fit its base model; raised before
    anything is loaded, with a message that names the file, the module and the shapes involved."""

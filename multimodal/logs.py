"""Keeping the libraries' chatter out of a person's way: progress bars and one-line messages
are what they should see, not load reports and deprecation notes."""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' logs and progress bars for one call, then restore them."""
    from transformers.utils import logging as transformers_logging

    verbosity = transformers_logging.get_verbosity()
    progress_bars = transformers_logging.is_progress_bar_enabled()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(verbosity)
        if progress_bars:
            transformers_logging.enable_progress_bar()


def quiet_libraries() -> None:
    """For the rest of the process: errors only from transformers and diffusers, and none of
    the libraries' harmless warnings (ours still show)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    warnings.filterwarnings("ignore", category=UserWarning, module=r"(torch|transformers|diffusers|torchvision)")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    transformers_logging.set_verbosity_error()
    diffusers_logging.set_verbosity_error()

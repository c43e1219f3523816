"""Measure a trained checkpoint on its data set's validation split.

The command lives in the package (multimodal/evaluate.py) so that an installed wheel has it as
`multimodal-evaluate`; this script is the same `main`, run from the repository.
"""

import sys

from multimodal.evaluate import build_parser, main  # noqa: F401  (tests and tools take them from here)

if __name__ == "__main__":
    sys.exit(main())

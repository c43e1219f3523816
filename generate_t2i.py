"""Text → image from the command line.

The command lives in the package (multimodal/generate_t2i.py) so that an installed wheel has it as
`multimodal-t2i`; this script is the same `main`, run from the repository.
"""

import sys

from multimodal.generate_t2i import build_parser, main  # noqa: F401  (tests and tools take them from here)

if __name__ == "__main__":
    sys.exit(main())

"""Image → text from the command line.

The command lives in the package (multimodal/generate_i2t.py) so that an installed wheel has it as
`multimodal-i2t`; this script is the same `main`, run from the repository.
"""

import sys

from multimodal.generate_i2t import build_parser, main  # noqa: F401  (tests and tools take them from here)

if __name__ == "__main__":
    sys.exit(main())

"""The web demo, in a browser: text → image, image → text and search on a trained checkpoint.

The command lives in the package (multimodal/serve.py) so that an installed wheel has it as
`multimodal-serve`; this script is the same `main`, run from the repository.
"""

import sys

from multimodal.serve import build_parser, main  # noqa: F401  (tests and tools take them from here)

if __name__ == "__main__":
    sys.exit(main())

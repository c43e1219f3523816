"""Look inside a training run: its loss curves, reconstructions, latent, sampling and embeddings.

The command lives in the package (multimodal/visualize.py) so that an installed wheel has it as
`multimodal-visualize`; this script is the same `main`, run from the repository.
"""

import sys

from multimodal.visualize import build_parser, main  # noqa: F401  (tests and tools take them from here)

if __name__ == "__main__":
    sys.exit(main())

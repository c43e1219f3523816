"""Train the GenerativeMultimodalModel on COCO captions or the built-in shapes set.

The command lives in the package (multimodal/train.py) so that an installed wheel has it as
`multimodal-train`; this script is the same `main`, run from the repository.
"""

import sys

from multimodal.train import build_parser, configs_from_args, main  # noqa: F401  (tests and tools take them from here)

if __name__ == "__main__":
    sys.exit(main())

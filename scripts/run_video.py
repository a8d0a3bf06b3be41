#!/usr/bin/env python
"""The ``run-video`` command as a script: ``python scripts/run_video.py INPUT [OPTIONS]``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rollingdepth.frontends.run_video import main  # noqa: E402

if __name__ == "__main__":
    main()

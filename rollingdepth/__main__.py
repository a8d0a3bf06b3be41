"""``python -m rollingdepth`` runs the ``run-video`` command."""

from rollingdepth.cli import main

if __name__ == "__main__":
    main()

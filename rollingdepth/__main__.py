"""``python -m rollingdepth`` runs the ``run-video`` command."""

from rollingdepth.frontends.run_video import main

if __name__ == "__main__":
    main()

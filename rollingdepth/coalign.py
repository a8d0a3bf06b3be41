"""``from rollingdepth.method.coalign import coalign`` (the documented import): co-alignment lives in
:mod:`rollingdepth.method.coalign`."""

from rollingdepth.method.coalign import *  # noqa: F401,F403
from rollingdepth.method.coalign import __all__  # noqa: F401

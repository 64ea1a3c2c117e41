"""`python -m training.synth`: the same as `wsvs-train synth` (see `training.synth.drives`)."""

import sys

from training.synth.drives import main

sys.exit(main())

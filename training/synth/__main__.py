"""`python -m wsvs_training.synth`: the same as `wsvs-train synth` (see `wsvs_training.synth.drives`)."""

import sys

from wsvs_training.synth.drives import main

sys.exit(main())

"""The phantom generator's defaults and limits, kept apart so ``synth --help`` shows them without loading it."""

DEFAULT_PATIENTS = 12
DEFAULT_SLICES_PER_PATIENT = 4
DEFAULT_SIZE = 512
FOLDS = 5
# The smallest slice side: below it the tumours and the head's outline are only a few pixels wide.
MIN_SIZE = 128

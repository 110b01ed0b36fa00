"""``python -m focustune.cli``: the ``focustune`` command."""

import sys

from focustune.cli import main

sys.exit(main())

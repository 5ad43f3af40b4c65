"""``python -m allnet_lib.cli`` is the same as the ``allnet`` command."""

import sys

from allnet_lib.cli import main

sys.exit(main())

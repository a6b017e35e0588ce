import sys

from apot.cli import main

sys.exit(main())

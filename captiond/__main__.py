import sys

from captiond.cli import main

sys.exit(main())

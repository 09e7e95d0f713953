import sys

from q2pt.cli import main

sys.exit(main())

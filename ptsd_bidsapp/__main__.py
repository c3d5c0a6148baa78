"""Allow ``python -m ptsd_bidsapp``."""
import sys

from ptsd_bidsapp.cli.run import main

if __name__ == "__main__":
    sys.exit(main())

import sys

from ideal.cli import main

sys.exit(main())

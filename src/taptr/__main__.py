import sys

from taptr.cli import main

sys.exit(main())

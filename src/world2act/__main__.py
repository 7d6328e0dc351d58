import sys

from world2act.cli import main

sys.exit(main())

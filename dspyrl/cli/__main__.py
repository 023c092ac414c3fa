import sys

from dspyrl.cli.main import main

sys.exit(main())

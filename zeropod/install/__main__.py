"""``python3 -m zeropod.install``: the installer, runnable from the wheel before installation."""

from zeropod.install.cli import main

raise SystemExit(main())

"""``python3 -m zeropod.activity``: see zeropod.activity.monitor."""

from zeropod.activity.monitor import main

raise SystemExit(main())

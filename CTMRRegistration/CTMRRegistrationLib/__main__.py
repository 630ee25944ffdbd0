"""`python -m CTMRRegistrationLib` is `ctmr-register`."""

from .apps.register_cli import main

raise SystemExit(main())

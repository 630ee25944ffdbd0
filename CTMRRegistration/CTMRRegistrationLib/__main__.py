"""`python -m CTMRRegistrationLib` is `ctmr-register`."""

from .cli import main

raise SystemExit(main())

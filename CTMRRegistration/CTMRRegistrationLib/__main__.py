"""`python -m CTMRRegistrationLib` is `ctmr-register`; `python -m CTMRRegistrationLib batch ...` is `ctmr-batch`."""

import sys

if __name__ == "__main__":
    if sys.argv[1:2] == ["batch"]:
        from .batch.cli import main

        raise SystemExit(main(sys.argv[2:]))
    from .apps.register_cli import main

    raise SystemExit(main())

from adept.cli import main

raise SystemExit(main())

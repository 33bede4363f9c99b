from leap.cli import main

raise SystemExit(main())

from leap.console import main

raise SystemExit(main())

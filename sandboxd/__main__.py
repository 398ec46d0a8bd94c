from sandboxd.cli.commands import main

raise SystemExit(main())

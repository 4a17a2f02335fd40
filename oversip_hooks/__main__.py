"""``python -m oversip_hooks``: the ``oversip-hooks`` command."""

from oversip_hooks._cli import main

if __name__ == "__main__":
    raise SystemExit(main())

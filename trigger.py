"""Entry point for CI, cron and webhooks: `python trigger.py ACTION ...` is `lunara ACTION ...`.

It runs the very same code path as the installed console script, from a checkout.
"""

from lunara.cli import main

if __name__ == "__main__":
    main()

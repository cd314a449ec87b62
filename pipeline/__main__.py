import signal
import sys

from .cli import main

code = main()
# The command's work is done and recorded: a stop request landing during interpreter shutdown (a cancel racing a
# training run's last step) must not turn this clean exit into death by SIGTERM.
signal.signal(signal.SIGTERM, signal.SIG_IGN)
sys.exit(code)

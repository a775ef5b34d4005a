"""``python -m mlplab.sweep`` (how ``workers=N`` starts its worker processes)."""

from mlplab.sweep.cli import main

main()
